"""One place for every setting; each is read from an ``IPT_CDS_*`` environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The knowledge base lives beside the package in a source checkout (the README installs the
# project in editable mode), so the default needs no configuration.
DEFAULT_KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "cards"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPT_CDS_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    # JSON lines for log collectors; "text" reads better in a terminal.
    log_format: Literal["json", "text"] = "json"

    knowledge_dir: Path = DEFAULT_KNOWLEDGE_DIR
    # SQLite is the embedded default; a postgresql+psycopg:// URL selects PostgreSQL.
    database_url: str = "sqlite:///ipt-cds.sqlite3"

    # Client authentication (docs/security.md). "off" is for local use only.
    auth_mode: Literal["off", "required"] = "off"
    trust_file: Path | None = None
    # The URL EHRs use to reach us; a token's aud must be this plus the endpoint's path.
    public_base_url: str | None = None
    jwt_leeway_seconds: float = Field(default=30, ge=0, le=300)
    # Where used jti values are remembered: this process, or the shared database.
    jti_store: Literal["memory", "database"] = "memory"
    # FHIR servers the service may call when authentication is off (JSON list of base URLs);
    # with authentication on, each issuer's fhir_servers in the trust file apply instead.
    fhir_allowlist: list[str] = Field(default_factory=list)

    # Request limits: the CDS Hooks sandbox sends bodies over 1 MB.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=8)
    max_bundle_entries: int = Field(default=20_000, ge=1)

    # Browser-based CDS clients (the CDS Hooks sandbox) need CORS: a JSON list of origins,
    # e.g. IPT_CDS_CORS_ORIGINS='["https://sandbox.cds-hooks.org"]'. Empty: no CORS headers.
    cors_origins: list[str] = Field(default_factory=list)

    fhir_timeout_seconds: float = Field(default=5.0, gt=0)
    # The whole fetch (all queries and their pages) must end within this budget: the EHR is
    # waiting, and an answer after its own timeout is worth nothing.
    fhir_total_timeout_seconds: float = Field(default=8.0, gt=0)
    fhir_max_pages: int = Field(default=50, ge=1)
    fhir_retries: int = Field(default=1, ge=0, le=3)
    fhir_max_connections: int = Field(default=100, ge=1)
