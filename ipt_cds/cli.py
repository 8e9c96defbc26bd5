"""``ipt-cds``: run the service, load and use the fixtures, print generated documents."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ipt_cds import __version__


def main(argv: Sequence[str] | None = None) -> int:
    default_folder = dev_auth_folder()
    parser = argparse.ArgumentParser(prog="ipt-cds", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ipt-cds {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the CDS Hooks service")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="allow the public CDS Hooks sandbox and pages on this machine as CORS origins",
    )

    fixtures = commands.add_parser("fixtures", help="the synthetic patients of fhir_fixtures/")
    what = fixtures.add_subparsers(dest="action", required=True)
    what.add_parser("list", help="list the fixtures and the cards each must produce")
    what.add_parser("build", help="regenerate fhir_fixtures/ from fhir_fixtures/cases/")
    load = what.add_parser("load", help="load the fixture patients into a FHIR server")
    load.add_argument("--fhir-server", required=True, help="FHIR base URL")
    load.add_argument("--token", help="bearer token for the FHIR server")
    load.add_argument("--name", action="append", default=[], help="only this fixture (repeatable)")
    load.add_argument(
        "--quiet", action="store_true", help="no progress bar: failures and the summary only"
    )
    load.add_argument(
        "--cases", type=Path, help="folder of case files (default: the repository's fixtures)"
    )

    check = what.add_parser(
        "check", help="check that the services' searches find the loaded patients on a server"
    )
    check.add_argument("--fhir-server", required=True, help="FHIR base URL")
    check.add_argument("--token", help="bearer token for the FHIR server")
    check.add_argument(
        "--cases", type=Path, help="folder of case files (default: the repository's fixtures)"
    )
    check.add_argument(
        "names", nargs="*", help="fixtures to check (default: a few that cover every search)"
    )

    invoke = commands.add_parser("invoke", help="call a CDS Service and print its cards")
    invoke.add_argument(
        "service_id",
        help="a service of cards/services.yaml, e.g. ipt-order-sign (see GET /cds-services)",
    )
    source = invoke.add_mutually_exclusive_group(required=True)
    source.add_argument("--fixture", help="a fixture name (see `ipt-cds fixtures list`)")
    source.add_argument("--request", type=Path, help="a CDS Hooks request JSON file")
    invoke.add_argument(
        "--service-url", help="the service's base URL (default: IPT_CDS_HOST and IPT_CDS_PORT)"
    )
    invoke.add_argument("--fhir-server", help="fhirServer for a fixture request")
    invoke.add_argument("--token", help="bearer token the service sends to that fhirServer")
    invoke.add_argument(
        "--no-prefetch", action="store_true", help="send a fixture without prefetch"
    )
    invoke.add_argument("--json", action="store_true", help="print the response as JSON")
    invoke.add_argument(
        "--signing-key",
        type=Path,
        nargs="?",
        const=default_folder,
        metavar="DIR",
        help=f"sign the call with `ipt-cds dev-auth init`'s key (default DIR: {default_folder})",
    )
    invoke.add_argument(
        "--in-process",
        action="store_true",
        help="answer in this process, no server needed (a fresh store: nothing held back)",
    )
    invoke.add_argument(
        "--detail", action="store_true", help="also print each card's text, links and reasons"
    )
    invoke.add_argument(
        "--same-instance",
        action="store_true",
        help="send the fixture's own hookInstance (a retry of the same call), not a new one",
    )

    dev_auth = commands.add_parser(
        "dev-auth", help="client authentication on this machine, for trying it out"
    )
    step = dev_auth.add_subparsers(dest="action", required=True)
    init = step.add_parser("init", help="write a key pair, its JWKS and a trust file")
    init.add_argument(
        "dir",
        type=Path,
        nargs="?",
        default=default_folder,
        help=f"folder for the files, made if missing (default: {default_folder}, out of the "
        "checkout: the private key must never be committed)",
    )
    init.add_argument("--fhir-server", help="the FHIR server the issuer's calls may use")
    sign = step.add_parser("token", help="print a signed client JWT")
    sign.add_argument("--aud", required=True, help="the URL called, e.g. .../ipt-order-sign")
    sign.add_argument(
        "--dir", type=Path, default=default_folder, help="init's folder (default: init's)"
    )

    replay = commands.add_parser(
        "replay",
        help="replay a population export through the services: cards per 100 calls, a report",
    )
    replay.add_argument("input", type=Path, help="a Bulk Data export folder, or FHIR Bundles")
    replay.add_argument(
        "--out", type=Path, required=True, help="folder for the results (new or empty)"
    )
    replay.add_argument(
        "--force", action="store_true", help="write into an --out folder that is not empty"
    )
    replay.add_argument("--engine", choices=("local", "spark"), default="local")
    replay.add_argument(
        "--as-of", type=_day, help="the day the calls are made, YYYY-MM-DD (default: today)"
    )
    replay.add_argument(
        "--scenarios",
        nargs="+",
        metavar="SCENARIO",
        help="patient-view, order-sign-ipt, order-sign-antidepressant (default: all three)",
    )
    replay.add_argument(
        "--with-ids", action="store_true", help="patient ids in cards.csv instead of pseudonyms"
    )
    replay.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    replay.add_argument(
        "--key-file",
        type=Path,
        help="secret key of the pseudonyms, so that runs can be linked (default: a new one)",
    )

    site = commands.add_parser("site", help="the site profile (IPT_CDS_SITE_FILE)")
    site_action = site.add_subparsers(dest="action", required=True)
    site_check = site_action.add_parser(
        "check",
        help="check a site profile without starting the service: every problem, a line each",
    )
    site_check.add_argument("file", type=Path, help="the site profile (YAML)")

    population = commands.add_parser("population", help="synthetic populations for replay")
    make = population.add_subparsers(dest="action", required=True)
    synth = make.add_parser("synth", help="write a synthetic Bulk Data export")
    synth.add_argument("--n", type=int, required=True, help="how many patients")
    synth.add_argument("--seed", type=int, default=1, help="the random seed (default 1)")
    synth.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    synth.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    synth.add_argument(
        "--as-of", type=_day, help="the day the records are dated from (default: today)"
    )

    valuesets = commands.add_parser("valuesets", help="the value sets of cards/valuesets/")
    vs_action = valuesets.add_subparsers(dest="action", required=True)
    expand = vs_action.add_parser(
        "expand",
        help="write each value set's expansion from its compose and cards/valuesets/sources/",
    )
    expand.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if an expansion is stale"
    )

    commands.add_parser("openapi", help="print the OpenAPI document as YAML")
    commands.add_parser("rules-doc", help="print docs/rules.md, generated from cards/")
    commands.add_parser("config-doc", help="print docs/configuration.md, from the settings")
    args = parser.parse_args(argv)
    if args.command == "invoke" and args.no_prefetch and not args.fhir_server:
        parser.error("--no-prefetch needs --fhir-server: the service fetches the data from it")
    if args.command == "invoke" and args.same_instance and not args.fixture:
        parser.error("--same-instance is for --fixture: a --request file is sent as it is")

    from ipt_cds.devtools import integrator

    if args.command == "openapi":
        sys.stdout.write(openapi_yaml())
        return 0
    if args.command == "config-doc":
        from ipt_cds.ops.config import describe

        sys.stdout.write(describe())
        return 0
    if args.command == "rules-doc":
        sys.stdout.write(rules_doc())
        return 0
    if args.command == "fixtures" and args.action == "list":
        return integrator.run(integrator.list_cases, sys.stdout)
    if args.command == "fixtures" and args.action == "build":
        from ipt_cds.devtools.fixtures import build

        sys.stdout.write(f"{build()} files written under fhir_fixtures/ and cards/examples/\n")
        return 0
    if args.command == "fixtures" and args.action == "check":
        return integrator.run(
            integrator.check, args.fhir_server, args.token, args.names, sys.stdout, args.cases
        )
    if args.command == "fixtures":
        return integrator.run(
            integrator.load,
            args.fhir_server,
            args.token,
            args.name,
            sys.stdout,
            quiet=args.quiet,
            cases_dir=args.cases,
        )
    if args.command == "dev-auth":
        return _dev_auth(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "population":
        return _synth(args)
    if args.command == "valuesets":
        from ipt_cds.devtools.valueset_expander import FOLDER, run

        return run(FOLDER, FOLDER / "sources", sys.stdout, check=args.check)
    if args.command == "site":
        from ipt_cds.devtools.site_check import check as check_site_file

        return check_site_file(args.file, sys.stdout)
    if args.command == "invoke" and args.in_process:
        return _invoke_in_process(args)
    if args.command == "invoke":
        return _invoke(args, args.service_url or _local_service_url())
    return _serve(args)


def dev_auth_folder() -> Path:
    """Where ``dev-auth`` keeps its key unless told: ``$XDG_CONFIG_HOME/ipt-cds/dev-auth``
    (``~/.config/ipt-cds/dev-auth``), this user's and out of any checkout, so that the private
    key cannot be committed with the code."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "ipt-cds" / "dev-auth"


def _invoke_in_process(args: argparse.Namespace) -> int:
    """The app built here and called without a network. Its store is a temporary file, so that
    once per visit never hides a card you invoke twice."""
    import tempfile
    import warnings

    with warnings.catch_warnings():
        # Starlette's notice about its test client's HTTP library: nothing for the user to do.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from ipt_cds.http.app import create_app
    from ipt_cds.ops.config import Settings

    with tempfile.TemporaryDirectory(prefix="ipt-cds-invoke-") as folder:
        store = f"sqlite:///{Path(folder) / 'store.sqlite3'}"
        settings = Settings(database_url=store, log_level="ERROR")
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as client:

            def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
                return client.post(url, json=body, headers=headers)

            return _invoke(args, args.service_url or "http://127.0.0.1:8080", post)


def _invoke(args: argparse.Namespace, service_url: str, post: Any = None) -> int:
    from ipt_cds.devtools import integrator

    return integrator.run(
        integrator.invoke,
        args.service_id,
        fixture=args.fixture,
        request_file=args.request,
        service_url=service_url,
        fhir_server=args.fhir_server,
        token=args.token,
        prefetch=not args.no_prefetch,
        as_json=args.json,
        out=sys.stdout,
        signing_key=args.signing_key,
        detail=args.detail,
        post=post,
        same_instance=args.same_instance,
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _replay(args: argparse.Namespace) -> int:
    from ipt_cds.knowledge.errors import KnowledgeError
    from ipt_cds.ops.config import Settings
    from ipt_cds.replay.run import REPLAY_ERRORS, Options, replay
    from ipt_cds.replay.scenarios import SCENARIOS

    settings = Settings()
    try:
        key = args.key_file.read_bytes() if args.key_file else b""
        options = Options(
            source=args.input,
            out=args.out,
            as_of=args.as_of or date.today(),
            knowledge_dir=settings.knowledge_dir,
            site_file=settings.site_file,
            scenarios=args.scenarios or list(SCENARIOS),
            engine=args.engine,
            with_ids=args.with_ids,
            workers=args.workers,
            key=key,
            force=args.force,
        )
        finished = replay(options, sys.stderr)
    except (*REPLAY_ERRORS, KnowledgeError, OSError) as exc:
        sys.stderr.write(f"ipt-cds replay: {exc}\n")
        return 2
    sys.stdout.write(finished.paragraph + "\n")
    if finished.summary["patients"] == 0:
        sys.stderr.write(
            "ipt-cds replay: no patient was replayed: the export holds no readable Patient "
            "resource (summary.json says what was read)\n"
        )
        return 2
    return 0


def _synth(args: argparse.Namespace) -> int:
    from ipt_cds.devtools.population import synthesize

    try:
        today = args.as_of or date.today()
        made = synthesize(args.n, args.seed, args.out, today, gzip_parts=args.gzip)
    except ValueError as exc:
        sys.stderr.write(f"ipt-cds population synth: {exc}\n")
        return 2
    total = sum(made.resources.values())
    sys.stdout.write(
        f"Wrote {made.patients:,} synthetic patients ({total:,} resources) in "
        f"{len(made.files)} files under {args.out}\n"
    )
    return 0


def _dev_auth(args: argparse.Namespace) -> int:
    from ipt_cds.devtools import dev_auth

    try:
        if args.action == "init":
            if args.fhir_server:
                return dev_auth.init(args.dir, sys.stdout, args.fhir_server)
            return dev_auth.init(args.dir, sys.stdout)
        sys.stdout.write(dev_auth.token(args.dir, args.aud) + "\n")
    except dev_auth.DevAuthError as exc:
        sys.stderr.write(f"ipt-cds: {exc}\n")
        return 2
    return 0


def _local_service_url(host: str | None = None, port: int | None = None) -> str:
    """Where this machine reaches a service listening on ``host``:``port`` (default: the
    settings'); one listening on every interface is reached on loopback."""
    from ipt_cds.ops.config import Settings

    settings = Settings()
    host = host or settings.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port or settings.port}"


def openapi_yaml() -> str:
    from ipt_cds.http.app import create_app
    from ipt_cds.ops.config import Settings

    # Only the document: not the warning a running service gives when auth is off.
    app = create_app(Settings(log_level="ERROR"))
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)


def rules_doc() -> str:
    from ipt_cds.devtools.rulesdoc import render
    from ipt_cds.knowledge.base import Knowledge
    from ipt_cds.ops.config import Settings

    return render(Knowledge.load(Settings().knowledge_dir))


def _configuration_problem(host: str | None = None) -> str | None:
    """What stops the service from starting, in one line (file or setting, field, problem);
    None when it can start. A traceback of 20-40 lines would bury it."""
    from pydantic import ValidationError

    from ipt_cds.http.operator import OperatorAccess
    from ipt_cds.http.trust import Trust, global_allowlist
    from ipt_cds.knowledge.base import Knowledge
    from ipt_cds.knowledge.errors import KnowledgeError
    from ipt_cds.ops.config import Settings
    from ipt_cds.storage.probe import database_problem

    try:
        settings = Settings()
        host = host or settings.host
        if "auth_mode" not in settings.model_fields_set and not _loopback(host):
            return (
                f"IPT_CDS_AUTH_MODE is not set and the service would listen on {host}, "
                "beyond this machine: set IPT_CDS_AUTH_MODE=required with IPT_CDS_TRUST_FILE, "
                "or IPT_CDS_AUTH_MODE=off to let anyone who reaches it call it "
                "(docs/security.md)"
            )
        Knowledge.load(settings.knowledge_dir, settings.site_file)
        global_allowlist(settings.fhir_allowlist)
        if settings.auth_mode == "required":
            if settings.trust_file is None:
                return "IPT_CDS_AUTH_MODE=required needs IPT_CDS_TRUST_FILE (docs/security.md)"
            Trust.load(settings.trust_file)
        OperatorAccess.load(settings.operator_token_file)
        return database_problem(settings.database_url)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "IPT_CDS_" + "_".join(str(part) for part in first["loc"]).upper()
        # Not the value: it may be a password in a database URL.
        return f"{name}: {first['msg']} (docs/configuration.md lists the settings)"
    except KnowledgeError as exc:
        return str(exc)
    except OSError as exc:  # a file named by a setting, present but unreadable
        return f"{exc.filename or 'a file'}: cannot be read ({exc.strerror or type(exc).__name__})"


def _loopback(host: str) -> bool:
    """Whether ``host`` is an interface only this machine reaches."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ipt_cds.ops.config import Settings

    if args.sandbox:
        os.environ["IPT_CDS_SANDBOX"] = "true"  # read by every worker's Settings
    problem = _configuration_problem(args.host)
    if problem is not None:
        sys.stderr.write(f"ipt-cds: configuration: {problem}\n")
        return 2
    settings = Settings()
    if settings.sandbox:
        from ipt_cds.devtools.sandbox import print_links

        discovery = f"{_local_service_url(args.host, args.port)}/cds-services"
        print_links(discovery, settings.fhir_allowlist, sys.stderr, settings.sandbox_url)
    from ipt_cds.ops.logs import uvicorn_log_config

    workers = args.workers or settings.workers
    with _shared_metrics(workers):
        # A factory, so that each worker process builds its own app (and importing builds
        # none).
        uvicorn.run(
            "ipt_cds.http.app:served_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=uvicorn_log_config(settings.log_level, settings.log_format),
            # The server's own answers (a request it cannot parse) in JSON, and no WebSockets:
            # the service has none, and uvicorn would answer an upgrade with a bare 403.
            http="ipt_cds.http.server:JsonHttpProtocol",
            ws="none",
            # Ours instead (ipt_cds/http/middleware.py): uvicorn's writes the whole URL, query
            # string included, where a misplaced token would land in the log.
            access_log=False,
        )
    return 0


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several workers: one folder for their metrics (ipt_cds/ops/metrics.py), made empty
    before they start, since values left by an earlier run would be added in. An operator's
    PROMETHEUS_MULTIPROC_DIR is used (and emptied of metric files) if set; else a temporary
    folder, removed afterwards."""
    from ipt_cds.ops.metrics import MULTIPROCESS_ENV

    if workers <= 1:
        yield
        return
    given = os.environ.get(MULTIPROCESS_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="ipt-cds-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(folder)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
            os.environ.pop(MULTIPROCESS_ENV, None)


if __name__ == "__main__":
    raise SystemExit(main())
