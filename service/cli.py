"""``ipt-cds``: run the service, or print its OpenAPI document."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipt-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the CDS Hooks service")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    commands.add_parser("openapi", help="print the OpenAPI document as YAML")
    commands.add_parser("rules-doc", help="print docs/rules.md, generated from cards/")
    args = parser.parse_args(argv)

    if args.command == "openapi":
        sys.stdout.write(openapi_yaml())
        return 0
    if args.command == "rules-doc":
        sys.stdout.write(rules_doc())
        return 0
    return _serve(args)


def openapi_yaml() -> str:
    from .app import app

    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)


def rules_doc() -> str:
    from .config import Settings
    from .knowledge import Knowledge
    from .rulesdoc import render

    return render(Knowledge.load(Settings().knowledge_dir))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .config import Settings

    settings = Settings()
    uvicorn.run(
        "service.app:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level.lower(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
