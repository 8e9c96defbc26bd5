"""`ipt-cds` for integrators: fixtures list, invoke (against a live service), clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from ipt_cds import __version__
from ipt_cds.cli import _local_service_url, main
from ipt_cds.devtools.fixtures import load_cases
from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings

from .conftest import NOW
from .fhir_server import free_port
from .serving import serving

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("cli")
    # The tests invoke the same fixture patients again and again: once per visit is off, or
    # the second call would hold their cards back.
    site = folder / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")
    settings = Settings(database_url=f"sqlite:///{folder / 'store.sqlite3'}", site_file=site)
    with serving(create_app(settings, clock=lambda: NOW)) as url:
        yield url


def test_fixtures_list_shows_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fixtures", "list"]) == 0
    out = capsys.readouterr().out
    cases = load_cases()
    assert out.endswith(f"{len(cases)} fixtures\n")
    assert "in-psychosis-schizophrenia-ipt" in out
    # Knowledge v2: ipt-psychosis on an IPT draft is a warning (was critical).
    assert "ipt-psychosis (warning)" in out


def test_invoke_prints_cards_readably(service_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["invoke", "ipt-order-sign", "--fixture", "in-psychosis-schizophrenia-ipt"]
    assert main([*args, "--service-url", service_url]) == 0
    out = capsys.readouterr().out
    # Knowledge v3: ipt-psychosis names the diagnosis, asks for an urgent psychiatric
    # assessment and suggests an urgent psychiatry referral besides removing the IPT order.
    assert out.startswith(
        "WARNING   IPT not recommended: Schizophrenia, unspecified (F20.9) on record; urgent"
        " psychiatric assessment\n"
    )
    assert "rule: ipt-psychosis (IPT not recommended with psychotic features)" in out
    assert (
        "suggestion: Remove the IPT order [delete ServiceRequest/in-psychosis-schizophrenia-ipt-d0]"
        in out
    )
    assert "suggestion: Refer to a psychiatrist (urgent) [create ServiceRequest]" in out


def test_invoke_json_with_a_request_file(
    service_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request = ROOT / "fhir_fixtures" / "requests" / "in-psychosis-schizophrenia-ipt.json"
    args = ["invoke", "ipt-order-sign", "--request", str(request), "--json"]
    assert main([*args, "--service-url", service_url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [c["source"]["topic"]["code"] for c in answer["cards"]] == ["ipt-psychosis"]


def test_invoke_shows_the_service_error(
    service_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["invoke", "ipt-patient-view", "--fixture", "in-psychosis-schizophrenia-ipt"]
    assert main([*args, "--service-url", service_url]) == 1
    assert "HTTP 400" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["invoke", "ipt-order-sign", "--fixture", "no-such-case"],
            "no fixture named 'no-such-case'",
        ),
        (
            ["invoke", "ipt-order-sign", "--request", "/nonexistent.json"],
            "/nonexistent.json: no such file",
        ),
        (
            ["invoke", "ipt-order-sign", "--request", str(ROOT / "README.md")],
            "README.md: not a JSON file",
        ),
        (
            ["fixtures", "load", "--fhir-server", "http://127.0.0.1:9/fhir"],
            "cannot reach the FHIR server",
        ),
    ],
)
def test_clear_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipt-cds: ")
    assert message in err
    assert "Traceback" not in err


def test_unreachable_service_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["invoke", "ipt-order-sign", "--fixture", "in-psychosis-schizophrenia-ipt"]
    assert main([*args, "--service-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err


# --- issue 15: the CLI's own manners --------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ipt-cds {__version__}"


def test_openapi_prints_the_document_and_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("openapi:")
    assert captured.err == ""


def test_no_prefetch_without_a_fhir_server_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["invoke", "ipt-order-sign", "--fixture", "x", "--no-prefetch"])
    assert exit_.value.code == 2
    assert "--no-prefetch needs --fhir-server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", "8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "9123", "http://127.0.0.1:9123"),  # noqa: S104 - the setting under test
        ("::1", "8081", "http://[::1]:8081"),
        ("cds.internal", "80", "http://cds.internal:80"),
    ],
)
def test_invoke_reaches_the_service_where_the_settings_put_it(
    monkeypatch: pytest.MonkeyPatch, host: str, port: str, url: str
) -> None:
    monkeypatch.setenv("IPT_CDS_HOST", host)
    monkeypatch.setenv("IPT_CDS_PORT", port)
    assert _local_service_url() == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IPT_CDS_PORT": "abc"}, "IPT_CDS_PORT: Input should be a valid integer"),
        ({"IPT_CDS_AUTH_MODE": "required"}, "IPT_CDS_AUTH_MODE=required needs IPT_CDS_TRUST_FILE"),
        ({"IPT_CDS_SITE_FILE": "{site}"}, "site.yaml: rules.ipt-hart: no such rule"),
        (
            {"IPT_CDS_TRUST_FILE": "/nonexistent/trust.yaml", "IPT_CDS_AUTH_MODE": "required"},
            "/nonexistent/trust.yaml: trust file not found",
        ),
        (
            {"IPT_CDS_HOST": "0.0.0.0"},  # noqa: S104
            "IPT_CDS_AUTH_MODE is not set and the service would listen on 0.0.0.0",
        ),
        ({"IPT_CDS_HOST": "ehr-facing.example.org"}, "IPT_CDS_AUTH_MODE is not set"),
        (
            {"IPT_CDS_DATABASE_URL": "mysql://ipt:hunter2@db.example.org/ipt"},
            "IPT_CDS_DATABASE_URL: mysql databases are not supported; use sqlite:///FILE or",
        ),
        (
            {"IPT_CDS_DATABASE_URL": "postgresql://ipt:hunter2@127.0.0.1:{closed}/ipt"},
            "IPT_CDS_DATABASE_URL: cannot connect to the PostgreSQL database ipt on 127.0.0.1:",
        ),
        (
            {"IPT_CDS_DATABASE_URL": "sqlite:////nonexistent/folder/ipt.sqlite3"},
            "cannot connect to the SQLite database /nonexistent/folder/ipt.sqlite3: unable to",
        ),
        (
            {"IPT_CDS_DATABASE_URL": "postgresql+asyncpg://ipt:hunter2@db.example.org/ipt"},
            "IPT_CDS_DATABASE_URL: postgresql driver 'postgresql+asyncpg' is not installed",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("rules: {ipt-hart: {enabled: false}}\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(site=site, closed=free_port()))
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipt-cds: configuration: ")
    assert message in err
    assert err.count("\n") == 1, "one line"
    assert "hunter2" not in err
    assert started == [], "the server is not started"


@pytest.mark.parametrize(
    ("host", "env"),
    [
        ("127.0.0.1", {}),
        ("::1", {}),
        ("localhost", {}),
        ("0.0.0.0", {"IPT_CDS_AUTH_MODE": "off"}),  # noqa: S104
    ],
)
def test_authentication_off_is_the_default_only_on_loopback_or_when_chosen(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    host: str,
    env: dict[str, str],
) -> None:
    monkeypatch.setenv("IPT_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(k))
    assert main(["serve", "--host", host]) == 0, capsys.readouterr().err
    assert [k["host"] for k in started] == [host]


def test_invoke_in_process_needs_no_server_and_never_holds_a_card_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["invoke", "ipt-order-sign", "--fixture", "in-psychosis-schizophrenia-ipt"]
    outputs = []
    for _ in range(2):  # twice: a fresh store each time, so once per visit hides nothing
        assert (
            main([*args, "--in-process", "--service-url", f"http://127.0.0.1:{free_port()}"]) == 0
        )
        outputs.append(capsys.readouterr())
    assert outputs[0].out == outputs[1].out
    assert "ipt-psychosis" in outputs[0].out
    assert outputs[0].err == ""


def test_invoke_detail_prints_the_whole_card_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["invoke", "ipt-order-sign", "--fixture", "in-suicide-item9-one-ipt", "--in-process"]
    assert main([*args, "--detail"]) == 0
    out = capsys.readouterr().out
    assert "**Evidence:**" in out
    assert "link: 988 Suicide & Crisis Lifeline <https://988lifeline.org>" in out
    assert "override reasons: " in out
    assert "source: IPT decision support" in out
    text = [
        line
        for line in out.splitlines()
        if line.startswith(" " * 10) and not line.lstrip().startswith(("link:", "source:"))
    ]
    assert text
    assert max(len(line) for line in text) <= 100, "the card's text is wrapped"
    assert main(args) == 0
    assert "**Evidence:**" not in capsys.readouterr().out, "without --detail, the summary only"
