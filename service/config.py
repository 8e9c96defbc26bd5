"""One place for every setting; each is read from an ``IPT_CDS_*`` environment variable."""

from __future__ import annotations

from pathlib import Path

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

    knowledge_dir: Path = DEFAULT_KNOWLEDGE_DIR
    # SQLite is the embedded default; a postgresql+psycopg:// URL selects PostgreSQL.
    database_url: str = "sqlite:///ipt-cds.sqlite3"

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
