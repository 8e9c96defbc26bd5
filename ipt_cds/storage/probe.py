"""Can the service use its database? Asked once by ``ipt-cds serve`` before any worker starts,
so that a wrong URL or a database that cannot be reached is one line naming the setting, the
database and the reason, not a traceback from every worker's start-up."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from ipt_cds.storage.store import CONNECT_TIMEOUT_SECONDS, database_url

SETTING = "IPT_CDS_DATABASE_URL"
SUPPORTED = "sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


def database_problem(url: str) -> str | None:
    """What stops the service from using the database at ``url``, in one line; None when a
    connection answers. The password is never part of it."""
    try:
        parsed = make_url(database_url(url))
    except ArgumentError:
        return f"{SETTING}: not a database URL; use {SUPPORTED}"
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        return f"{SETTING}: {backend} databases are not supported; use {SUPPORTED}"
    where = _where(parsed)
    args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if backend == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=args)
    except (NoSuchModuleError, ImportError) as exc:
        return f"{SETTING}: {backend} driver {parsed.drivername!r} is not installed ({exc})"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        hint = (
            " (does its folder exist, and may the service write there?)"
            if backend == "sqlite"
            else ""
        )
        return f"{SETTING}: cannot connect to {where}: {_first_line(exc.orig)}{hint}"
    except SQLAlchemyError as exc:
        return f"{SETTING}: cannot connect to {where}: {type(exc).__name__}"
    finally:
        engine.dispose()
    return None


def _where(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"the SQLite database {url.database or '(in memory)'}"
    port = f":{url.port}" if url.port else ""
    return f"the PostgreSQL database {url.database or ''} on {url.host or 'localhost'}{port}"


def _first_line(error: BaseException | None) -> str:
    words = str(error).strip().splitlines()
    return words[0].strip() if words else type(error).__name__
