"""``ipt-cds``: run the service, load and use the fixtures, print generated documents."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipt-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the CDS Hooks service")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")

    fixtures = commands.add_parser("fixtures", help="the synthetic patients of fhir_fixtures/")
    what = fixtures.add_subparsers(dest="action", required=True)
    what.add_parser("list", help="list the fixtures and the cards each must produce")
    what.add_parser("build", help="regenerate fhir_fixtures/ from fhir_fixtures/cases/")
    load = what.add_parser("load", help="load the fixture patients into a FHIR server")
    load.add_argument("--fhir-server", required=True, help="FHIR base URL")
    load.add_argument("--token", help="bearer token for the FHIR server")
    load.add_argument("--name", action="append", default=[], help="only this fixture (repeatable)")

    invoke = commands.add_parser("invoke", help="call a CDS Service and print its cards")
    invoke.add_argument("service_id", help="ipt-order-select, ipt-order-sign or ipt-patient-view")
    source = invoke.add_mutually_exclusive_group(required=True)
    source.add_argument("--fixture", help="a fixture name (see `ipt-cds fixtures list`)")
    source.add_argument("--request", type=Path, help="a CDS Hooks request JSON file")
    invoke.add_argument("--service-url", default="http://127.0.0.1:8080")
    invoke.add_argument("--fhir-server", help="fhirServer for a fixture request")
    invoke.add_argument("--token", help="bearer token the service sends to that fhirServer")
    invoke.add_argument(
        "--no-prefetch", action="store_true", help="send a fixture without prefetch"
    )
    invoke.add_argument("--json", action="store_true", help="print the response as JSON")

    commands.add_parser("openapi", help="print the OpenAPI document as YAML")
    commands.add_parser("rules-doc", help="print docs/rules.md, generated from cards/")
    commands.add_parser("config-doc", help="print docs/configuration.md, from the settings")
    args = parser.parse_args(argv)

    from service.devtools import integrator

    if args.command == "openapi":
        sys.stdout.write(openapi_yaml())
        return 0
    if args.command == "config-doc":
        from service.ops.config import describe

        sys.stdout.write(describe())
        return 0
    if args.command == "rules-doc":
        sys.stdout.write(rules_doc())
        return 0
    if args.command == "fixtures" and args.action == "list":
        return integrator.run(integrator.list_cases, sys.stdout)
    if args.command == "fixtures" and args.action == "build":
        from service.devtools.fixtures import build

        sys.stdout.write(f"{build()} files written under fhir_fixtures/\n")
        return 0
    if args.command == "fixtures":
        return integrator.run(integrator.load, args.fhir_server, args.token, args.name, sys.stdout)
    if args.command == "invoke":
        return integrator.run(
            integrator.invoke,
            args.service_id,
            fixture=args.fixture,
            request_file=args.request,
            service_url=args.service_url,
            fhir_server=args.fhir_server,
            token=args.token,
            prefetch=not args.no_prefetch,
            as_json=args.json,
            out=sys.stdout,
        )
    return _serve(args)


def openapi_yaml() -> str:
    from service.http.app import create_app

    return yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True, width=100)


def rules_doc() -> str:
    from service.devtools.rulesdoc import render
    from service.knowledge.base import Knowledge
    from service.ops.config import Settings

    return render(Knowledge.load(Settings().knowledge_dir))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.ops.config import Settings

    settings = Settings()
    # A factory, so that each worker process builds its own app (and importing builds none).
    uvicorn.run(
        "service.http.app:served_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level.lower(),
        # The server's own answers (a request it cannot parse) in JSON, and no WebSockets: the
        # service has none, and uvicorn would answer an upgrade with a bare 403.
        http="service.http.server:JsonHttpProtocol",
        ws="none",
        # Ours instead (service/http/middleware.py): uvicorn's writes the whole URL, query
        # string included, where a misplaced token would land in the log.
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
