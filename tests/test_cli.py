"""`ipt-cds` for integrators: fixtures list, invoke (against a live service), clear errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from service.cli import main
from service.devtools.fixtures import load_cases
from service.http.app import create_app
from service.ops.config import Settings

from .conftest import NOW
from .fhir_server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("cli")
    # The tests invoke the same fixture patients again and again: once per visit is off, or
    # the second call would hold their cards back.
    site = folder / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")
    settings = Settings(database_url=f"sqlite:///{folder / 'store.sqlite3'}", site_file=site)
    app = create_app(settings, clock=lambda: NOW)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
    # Knowledge v2: ipt-psychosis is a warning (was critical), asks for a psychiatric
    # assessment and suggests an urgent psychiatry referral besides removing the IPT order.
    assert out.startswith(
        "WARNING   IPT not recommended: psychotic features on record; psychiatric assessment"
        " needed\n"
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
