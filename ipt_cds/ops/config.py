"""One place for every setting; each is read from an ``IPT_CDS_*`` environment variable.

docs/configuration.md is generated from the descriptions below (``ipt-cds config-doc``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _installed_knowledge_dir() -> Path:
    """``cards/`` as installed with the package (ipt_cds.cards): the checkout's own folder in an
    editable install, the copy in site-packages in a wheel install. Found when first needed,
    not at import."""
    return Path(str(files("ipt_cds.cards")))


# Defaults that code outside the settings also falls back on (an Authenticator or a
# CardRecorder built without settings, as tests do), so that the two cannot drift apart.
DEFAULT_JWT_LEEWAY_SECONDS = 30
DEFAULT_MAX_PENDING_CARD_ROWS = 20_000
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
SPOOL_FOLDER = "ipt-cds-spool"
DEFAULT_IN_FLIGHT = 64 * 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPT_CDS_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface `ipt-cds serve` listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port `ipt-cds serve` listens on.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes of `ipt-cds serve`.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["json", "text"] = Field(
        "json", description="JSON lines for log collectors, or text for a terminal."
    )
    knowledge_dir: Path = Field(
        default_factory=_installed_knowledge_dir,
        description="The knowledge base: `cards/` as installed with the service, unless set.",
    )
    site_file: Path | None = Field(
        None,
        description="The site profile (YAML): organisation, EHR profile, once-per-visit window, "
        "links, local orderable codes, and per rule enabled / silent / snooze_days; checked at "
        "start-up (docs/site-profile.md). Unset: the defaults.",
    )
    database_url: str = Field(
        "sqlite:///ipt-cds.sqlite3",
        description="Feedback and audit store: an SQLite file, or `postgresql://…` to share "
        "one database between replicas.",
    )
    max_pending_card_rows: int = Field(
        DEFAULT_MAX_PENDING_CARD_ROWS,
        ge=100,
        description="Cards shown waiting to be written; beyond this (the store is not keeping "
        "up) they are dropped from the statistics and counted in "
        "`ipt_cds_cards_unrecorded_total`.",
    )
    spool_dir: Path | None = Field(
        None,
        description="Folder of the local spool, where cards shown, what the card memory keeps "
        "and feedback wait to be written to the database (one file per worker process; "
        "docs/deployment.md). It must survive a restart of the service: a volume, never a "
        "tmpfs. Unset: `ipt-cds-spool` beside an SQLite database file, else in the working "
        "directory.",
    )
    spool_max_bytes: int = Field(
        DEFAULT_SPOOL_MAX_BYTES,
        ge=1024,
        description="Most bytes each worker's spool holds while the database is away; beyond, "
        "feedback answers 503 `spool_unavailable` with `Retry-After` and cards shown are "
        "dropped from the statistics (counted in `ipt_cds_cards_unrecorded_total`).",
    )
    auth_mode: Literal["off", "required"] = Field(
        "off",
        description="`required`: every call carries a CDS Hooks client JWT. `off` is for local "
        "use only (a warning is logged at start-up). Unset, `ipt-cds serve` is `off` on "
        "loopback only and refuses to start on any other interface.",
    )
    trust_file: Path | None = Field(
        None, description="YAML or JSON trust file: issuers, their JWKS and FHIR servers."
    )
    operator_token_file: Path | None = Field(
        None,
        description="A file holding the operator's bearer token (one word, 32 characters or "
        "more): it opens `/stats`, `/stats/cards` and `/metrics` without a client JWT, and once "
        "set `/metrics` needs it (docs/operations.md).",
    )
    public_base_url: str | None = Field(
        None,
        description="The URL EHRs use to reach the service (http or https, no query or "
        "fragment; a trailing slash is dropped); a JWT's `aud` must be this plus the "
        "endpoint's path, and each card's `source.url` is this plus `/evidence/{rule}`. "
        "Default: the URL of the request.",
    )
    jwt_leeway_seconds: float = Field(
        DEFAULT_JWT_LEEWAY_SECONDS,
        ge=0,
        le=300,
        description="Clock skew allowed on `exp`, `iat` and `nbf`.",
    )
    jti_store: Literal["memory", "database"] = Field(
        "memory",
        description="Where used JWT ids are remembered: this process, or the shared database "
        "(needed with several replicas).",
    )
    fhir_allowlist: list[str] = Field(
        default_factory=list,
        description="JSON list of FHIR base URLs the service may call when authentication is "
        "off (with it on, each issuer's `fhir_servers`). https, or http on loopback only.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond)."
    )
    max_bytes_in_flight: int = Field(
        DEFAULT_IN_FLIGHT,
        ge=1024 * 1024,
        description="Most bytes a worker holds at once for request bodies and FHIR answers "
        "(decompressed) of the calls it is answering; beyond, a body is refused with 503 `busy` "
        "and `Retry-After`, an optional FHIR read is left unread (unknown), an essential one "
        "answers 503 `busy`. Bounds a worker's peak memory under load; at least "
        "`max_body_bytes` and `fhir_max_answer_bytes`.",
    )
    max_json_depth: int = Field(64, ge=8, description="Deepest JSON nesting (400 beyond).")
    max_bundle_entries: int = Field(
        20_000, ge=1, description="Most entries in a prefetch or draftOrders Bundle (413)."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="JSON list of browser origins allowed by CORS (e.g. the CDS Hooks sandbox).",
    )
    preview: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The card preview page (/preview): `auto` serves it when client "
        "authentication is off; `on` serves it always (it runs requests without a client "
        "token: a trusted network only); `off` never.",
    )
    sandbox: bool = Field(
        False,
        description="Allow the public CDS Hooks sandbox (https://sandbox.cds-hooks.org), the "
        "page of IPT_CDS_SANDBOX_URL and pages on this machine (http://localhost, 127.0.0.1 or "
        "[::1], any port) as CORS origins, beside IPT_CDS_CORS_ORIGINS; `ipt-cds serve "
        "--sandbox` sets it.",
    )
    sandbox_url: str = Field(
        "https://sandbox.cds-hooks.org/",
        pattern=r"^https?://[^/?#\s]+/",
        description="The CDS Hooks sandbox page the links of `ipt-cds serve --sandbox` open: the "
        "public one, or a copy you serve (docs/integration.md section 7).",
    )
    fhir_timeout_seconds: float = Field(5.0, gt=0, description="Timeout of one FHIR request.")
    fhir_total_timeout_seconds: float = Field(
        8.0,
        gt=0,
        description="Budget for the whole fetch of missing prefetch: the EHR is waiting, and "
        "an answer after its own timeout is worth nothing.",
    )
    fhir_max_pages: int = Field(50, ge=1, description="Bundle pages followed per search.")
    fhir_retries: int = Field(
        1, ge=0, le=3, description="Retries on connection errors and 502/503/504."
    )
    fhir_max_connections: int = Field(
        100, ge=1, description="Connection pool size towards FHIR servers."
    )
    fhir_max_answer_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes read, after decompression, for one prefetch query from a FHIR "
        "server (all its pages together); beyond, the answer is dropped unread and the call "
        "answers 412 `fhir_answer_too_large`. Bounds the memory a FHIR server can take.",
    )

    fhir_capabilities_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a FHIR server's CapabilityStatement (`/metadata`), or its lack of "
        "one, is kept before it is read again; the searches are shaped to what it lists. 0 "
        "never reads it: every search is sent as written.",
    )
    fhir_capabilities_servers: int = Field(
        64, ge=1, description="FHIR servers whose CapabilityStatement is kept at once."
    )

    @field_validator("site_file", mode="before")
    @classmethod
    def _site_file(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _one_call_fits_in_flight(self) -> Settings:
        # Below either, a call at its limit would be refused as busy for ever.
        largest = max(self.max_body_bytes, self.fhir_max_answer_bytes)
        if self.max_bytes_in_flight < largest:
            raise ValueError(
                f"max_bytes_in_flight ({self.max_bytes_in_flight}) must be at least "
                f"max_body_bytes and fhir_max_answer_bytes ({largest})"
            )
        return self

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty: as if unset
        example = "such as https://cds.example.org"
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError(f"must be a URL {example}, without spaces or control characters")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 -- parsing the port is what refuses a bad one
        except ValueError as exc:
            raise ValueError(f"must be a URL {example}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http or https URL with a host, {example}")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError("must have no query (?) or fragment (#)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must hold no user name or password")
        return value.rstrip("/")

    @property
    def spool_folder(self) -> Path:
        """``spool_dir``, or its default: beside an SQLite database file, since that folder is
        already where the service keeps what must last."""
        if self.spool_dir is not None:
            return self.spool_dir
        for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
            path = self.database_url.removeprefix(prefix)
            if path != self.database_url and path and not path.startswith(":memory:"):
                return Path(path.split("?", 1)[0]).parent / SPOOL_FOLDER
        return Path(SPOOL_FOLDER)

    @property
    def preview_served(self) -> bool:
        """The card preview is served: asked for, or by default while auth is off."""
        return self.preview == "on" or (self.preview == "auto" and self.auth_mode == "off")


def describe() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable (generated from `ipt_cds/ops/config.py` by",
        "`ipt-cds config-doc`; do not edit by hand). Lists are JSON, e.g.",
        "`IPT_CDS_FHIR_ALLOWLIST='[\"https://ehr.example.org/fhir\"]'`.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default: Any = field.get_default(call_default_factory=True)
        if name == "knowledge_dir":
            default = "cards/ as installed"
        shown = "(none)" if default in (None, []) else f"`{default}`"
        lines.append(f"| `IPT_CDS_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"
