"""The evidence pages: ``GET /evidence`` lists the rules, ``GET /evidence/{rule_id}`` shows one.

What a page says is built by ``ipt_cds/knowledge/evidence.py``; here it is rendered as HTML from
``templates/`` (Jinja2, autoescaped), once at start-up: the knowledge base and the site profile
do not change while the service runs, and a page is the same for every caller. Its example cards
are drawn by the preview's renderer (``card_html.view`` and ``templates/_card.html``). Every
card's ``source.url`` points at its rule's page.

The pages are public, even with ``IPT_CDS_AUTH_MODE=required``: a clinician's browser opens
them from the EHR without a CDS Hooks JWT, and they hold no patient data. Their answers forbid
scripts and every other resource (Content-Security-Policy) and content sniffing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response

from ipt_cds.http.card_html import view
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.evidence import PATH, TOPIC, EvidencePage, pages, python_rule_page
from ipt_cds.protocol.errors import NotFound
from ipt_cds.protocol.models import ErrorBody

# Inline styles only: no script, image, font, frame, form target or base URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# A retired rule id's page: what replaced it, and a link there (ids are [a-z0-9-]; escaped all
# the same).
_RETIRED = """{% extends "base.html" %}
{% block title %}{{ page.rule_id }} (retired) · IPT decision support{% endblock %}
{% block body %}
<p><a href="{{ index }}">All rules</a></p>
<h1>Rule <code>{{ page.rule_id }}</code> is retired</h1>
<p>Its cards are now made by the rule <a href="{{ href }}"><code>{{ page.replaced_by }}</code></a>,
which says what it checks and the evidence behind it.</p>
{% endblock %}
"""


@dataclass(frozen=True)
class EvidenceSite:
    """The rendered pages: the index, and each rule's page by rule id."""

    index: bytes
    pages: Mapping[str, bytes]

    @classmethod
    def render(cls, pages: Iterable[EvidencePage]) -> EvidenceSite:
        env = templates()
        page_template = env.get_template("evidence.html")
        retired_template = env.from_string(_RETIRED)
        every = list(pages)
        listed = [page for page in every if page.replaced_by is None]
        # Relative links, so that they hold behind any base URL or root path.
        index_name = PATH.rsplit("/", 1)[-1]
        rendered = {
            page.rule_id: page_template.render(
                page=page, index=f"../{index_name}", examples=_examples(page)
            ).encode()
            for page in listed
        }
        for page in every:
            if page.replaced_by is not None:
                rendered[page.rule_id] = retired_template.render(
                    page=page, index=f"../{index_name}", href=quote(page.replaced_by, safe="")
                ).encode()
        links = [
            {
                "rule_id": page.rule_id,
                "title": page.title,
                "href": f"{index_name}/{quote(page.rule_id, safe='')}",
            }
            for page in listed
        ]
        index = env.get_template("index.html").render(pages=links, topic=TOPIC).encode()
        return cls(index, rendered)


@lru_cache(maxsize=8)
def site_of(
    knowledge: Knowledge, python_rules: tuple[tuple[str, tuple[str, ...]], ...] = ()
) -> EvidenceSite:
    """The pages of a knowledge base, and of the rules (id, hooks) that the embedding
    application passes in Python: rendered once for both, however many apps are built on them
    (a test suite builds hundreds, and rendering took a quarter of building one)."""
    return EvidenceSite.render(
        [*pages(knowledge), *(python_rule_page(rule_id, hooks) for rule_id, hooks in python_rules)]
    )


def _examples(page: EvidencePage) -> dict[str, dict[str, Any]]:
    """Each example card as the preview shows it; its source is this page, so not linked."""
    return {
        case.indicator: view(page.rule_id, case.example.card)
        for case in page.indicators
        if case.example is not None
    }


@cache
def templates() -> Environment:
    """Loaded when the first app is built (never at import), then shared: templates compile
    once per process."""
    return Environment(
        loader=PackageLoader("ipt_cds.http", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


router = APIRouter()

_HTML_PAGE: dict[str, Any] = {
    "description": "An HTML page, the same for every caller (no patient data).",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
# The error answers are JSON, as everywhere else (the model would be filed under text/html).
_UNKNOWN_RULE: dict[str, Any] = {
    "description": "No such rule: `unknown_rule`.",
    "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}
    },
}
# Not an enum, unlike the service ids: the rules change more often, and openapi.yaml would go
# stale with each.
_RuleId = Annotated[
    str,
    Path(
        description="A rule of the service: a card's `source.topic.code`, as `GET /evidence` "
        "lists them. Another answers 404 `unknown_rule`."
    ),
]
# Public: no client authentication, whatever IPT_CDS_AUTH_MODE says.
_PUBLIC: dict[str, Any] = {"security": []}


def _site(request: Request) -> EvidenceSite:
    site: EvidenceSite = request.app.state.evidence
    return site


def _html(body: bytes) -> Response:
    return HTMLResponse(body, headers=HEADERS)


@router.get(
    PATH,
    summary="The rules, each with a link to its evidence page",
    response_class=HTMLResponse,
    responses={200: _HTML_PAGE},
    openapi_extra=_PUBLIC,
)
async def evidence_index(request: Request) -> Response:
    return _html(_site(request).index)


@router.get(
    PATH + "/{rule_id}",
    summary="A rule's evidence page: what it checks, its card, its evidence and parameters",
    response_class=HTMLResponse,
    responses={200: _HTML_PAGE, 404: _UNKNOWN_RULE},
    openapi_extra=_PUBLIC,
)
async def evidence_page(rule_id: _RuleId, request: Request) -> Response:
    try:
        body = _site(request).pages[rule_id]
    except KeyError:
        raise NotFound(f"No rule {rule_id!r}.", code="unknown_rule") from None
    return _html(body)
