"""Every answer is JSON with a stable code: a near miss of a path or a method is a 404 or a 405,
never a redirect (a 307 has no body, and would have an EHR resend a patient's data to another
URL). The server's own answers are in tests/test_server.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings

from .conftest import AppFactory

NEAR_MISSES = [
    ("POST", "/cds-services/"),
    ("GET", "/cds-services/"),
    ("POST", "/cds-services/ipt-order-sign/"),
    ("POST", "/cds-services/ipt-order-sign/feedback/"),
    ("GET", "/stats/cards/"),
    ("GET", "/health/"),
    ("GET", "/ready/"),
    ("GET", "/metrics/"),
    ("POST", "/cds-services//feedback"),
    ("POST", "/cds-services/ipt-order-sign//feedback"),
    # Absolute: httpx would read "//cds-services" as a host named cds-services and path "/".
    ("GET", "http://testserver//cds-services"),
    ("GET", "/CDS-SERVICES"),
    ("GET", "/cds-services/ipt-order-sign/feedback/extra"),
    ("GET", "/openapi.json/"),
    ("GET", "/docs"),
]


@pytest.mark.parametrize(("method", "path"), NEAR_MISSES)
def test_a_near_miss_of_a_path_is_a_json_404_not_a_redirect(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, json={}, follow_redirects=False)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "location" not in response.headers
    assert response.json()["code"] == "not_found"


def test_a_trailing_slash_is_named_in_the_message(client: TestClient) -> None:
    response = client.post("/cds-services/ipt-order-sign/", json={}, follow_redirects=False)
    assert response.json() == {
        "code": "not_found",
        "message": "Not Found: no path ends with '/' (did you mean /cds-services/ipt-order-sign?)",
    }


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/cds-services/ipt-order-sign", "POST"),
        ("PUT", "/cds-services/ipt-order-sign", "POST"),
        ("GET", "/cds-services/ipt-order-sign/feedback", "POST"),
        ("POST", "/cds-services", "GET"),
        ("DELETE", "/cds-services", "GET"),
        ("POST", "/stats/cards", "GET"),
        ("PATCH", "/health", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_a_wrong_method_is_a_json_405_saying_what_is_allowed(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, follow_redirects=False)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.headers["allow"] == allowed
    assert response.json()["code"] == "method_not_allowed"


def test_an_unknown_service_is_a_404_of_its_own(client: TestClient) -> None:
    for path in ("/cds-services/nope", "/cds-services/nope/feedback"):
        response = client.post(path, json={}, follow_redirects=False)
        assert (response.status_code, response.json()["code"]) == (404, "unknown_service")


class _Exploding:
    """A middleware outside the error boundary that fails: Starlette's last layer answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            raise RuntimeError("Jane Doe's record broke the middleware")
        await self.app(scope, receive, send)


def test_a_failure_outside_the_error_boundary_is_still_a_json_500(
    settings: Settings, knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, knowledge=knowledge)
    app.add_middleware(_Exploding)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/health")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "internal_error"
    ours = [r.getMessage() for r in caplog.records if r.name == "ipt_cds"]
    assert any("unhandled RuntimeError" in m for m in ours)
    assert not any("Jane Doe" in m for m in ours)


def test_cors_preflights_answer_json(make_client: AppFactory) -> None:
    client = make_client(cors_origins=["https://sandbox.cds-hooks.org"])
    asked = {
        "Origin": "https://sandbox.cds-hooks.org",
        "Access-Control-Request-Method": "POST",
    }
    allowed = client.options("/cds-services/ipt-order-sign", headers=asked)
    assert (allowed.status_code, allowed.json()) == (200, {"status": "ok"})
    assert allowed.headers["content-type"] == "application/json"
    assert allowed.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    refused = client.options(
        "/cds-services/ipt-order-sign",
        headers={
            **asked,
            "Origin": "https://evil.example.com",
            "Access-Control-Request-Method": "PUT",
        },
    )
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "cors_refused",
        "message": "Disallowed CORS origin, method",
    }
