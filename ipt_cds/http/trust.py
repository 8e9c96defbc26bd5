"""Whom the service trusts: the EHR issuers of client JWTs, and the FHIR servers it may call.

The trust file (``IPT_CDS_TRUST_FILE``, YAML or JSON) lists issuers::

    issuers:
      - iss: https://ehr.example.org/
        jwks_url: https://ehr.example.org/.well-known/jwks.json   # or jwks_file / jwks
        jku_allowed: [https://ehr.example.org/jwks]               # token jku accepted only here
        fhir_servers: [https://ehr.example.org/fhir/r4]          # the service calls only these
        tenants: [tenant-a]                                      # optional tenant allowlist
        ignore_jku: false         # true: only the keys above, whatever jku a token names

``jwks_file`` is read relative to the trust file's folder.

A FHIR base URL must be https, except a loopback test server named explicitly. The file is
checked at start-up; a mistake stops the service with the file's name.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.protocol.errors import location

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normal_base(url: str) -> str:
    """Compare FHIR base URLs without case in scheme and host, or a trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def allowed_base(url: str, bases: Collection[str]) -> bool:
    """Whether ``url`` is one of ``bases`` (normal_base'd); a URL urlsplit cannot read (an
    unclosed ``[``) is none of them, not an error."""
    try:
        return normal_base(url) in bases
    except ValueError:
        return False


def check_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return normal_base(url)
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return normal_base(url)
    raise ValueError(f"{url!r}: a FHIR server must be https (http only for a loopback test server)")


class Issuer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iss: str = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwks: dict[str, Any] | None = None
    jku_allowed: list[str] = Field(default_factory=list)
    fhir_servers: list[str] = Field(default_factory=list)
    tenants: list[str] | None = None
    # Pin the issuer's keys: verify with jwks_url, jwks_file or jwks only, and ignore a token's
    # jku (the CDS Hooks sandbox names a public jku, which an offline test cannot fetch). By
    # default a jku not listed in jku_allowed is refused.
    ignore_jku: bool = False

    @field_validator("fhir_servers")
    @classmethod
    def _bases(cls, urls: list[str]) -> list[str]:
        return [check_base(u) for u in urls]

    @field_validator("jwks_url")
    @classmethod
    def _jwks_https(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "https" and not is_loopback(parts.hostname):
                raise ValueError("a JWKS URL must be https")
        return url

    @model_validator(mode="after")
    def _one_key_source(self) -> Issuer:
        sources = [s for s in (self.jwks_url, self.jwks_file, self.jwks) if s is not None]
        if len(sources) > 1:
            raise ValueError("give one of jwks_url, jwks_file, jwks")
        if not sources and not self.jku_allowed:
            raise ValueError("give jwks_url, jwks_file or jwks, or allow jku URLs")
        if self.ignore_jku and not sources:
            raise ValueError("ignore_jku needs the keys to pin: jwks_url, jwks_file or jwks")
        return self

    def allows_fhir_server(self, url: str) -> bool:
        return allowed_base(url, self.fhir_servers)


class TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuers: list[Issuer] = Field(min_length=1)


class Trust:
    def __init__(self, issuers: list[Issuer]) -> None:
        self.issuers = {i.iss: i for i in issuers}

    @classmethod
    def load(cls, path: Path) -> Trust:
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            parsed = TrustFile.model_validate(data)
        except FileNotFoundError:
            raise KnowledgeError(f"{path}: trust file not found") from None
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise KnowledgeError(f"{path}: not valid YAML or JSON: {exc}") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {msg}") from None
        issuers = []
        for issuer in parsed.issuers:
            if issuer.jwks_file is not None:
                jwks_path = (path.parent / issuer.jwks_file).resolve()
                try:
                    jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError) as exc:
                    raise KnowledgeError(f"{path}: issuer {issuer.iss}: jwks_file: {exc}") from None
                issuer = issuer.model_copy(update={"jwks": jwks, "jwks_file": jwks_path})
            issuers.append(issuer)
        return cls(issuers)


def global_allowlist(urls: list[str]) -> frozenset[str]:
    """The FHIR servers allowed when client authentication is off."""
    try:
        return frozenset(check_base(u) for u in urls)
    except ValueError as exc:
        raise KnowledgeError(f"IPT_CDS_FHIR_ALLOWLIST: {exc}") from None
