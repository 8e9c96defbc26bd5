"""``GET /``: a page for a person who opens the service's address: the three services, and links
that all lead somewhere; public and script-free like the evidence pages."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from ipt_cds.http.evidence import CONTENT_SECURITY_POLICY

from .conftest import AppFactory

SERVICES = ("ipt-order-select", "ipt-order-sign", "ipt-patient-view")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]


def test_the_home_page_lists_the_services_and_every_link_works(make_client: AppFactory) -> None:
    client = make_client()
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page = response.text
    for service in SERVICES:
        assert f"<code>{service}</code>" in page
    links = _Links()
    links.feed(page)
    assert {"cds-services", "evidence", "openapi.json", "stats", "stats/cards", "preview"} <= set(
        links.hrefs
    )
    for href in links.hrefs:
        assert not href.startswith(("/", "http")), f"{href}: relative, to hold behind a prefix"
        assert client.get(f"/{href}").status_code == 200, href
    assert "the operator's token or a client token" not in page


def test_the_home_page_is_public_when_auth_is_required(
    make_client: AppFactory, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        "issuers:\n  - iss: https://ehr.example.org/\n    jku_allowed: [https://ehr.example.org/jwks]\n"
    )
    client = make_client(auth_mode="required", trust_file=trust)
    response = client.get("/")
    assert response.status_code == 200
    assert "need the operator's token or a client token" in response.text
    assert 'href="preview"' not in response.text, "the preview is off when auth is required"
    assert client.get("/cds-services").status_code == 401
