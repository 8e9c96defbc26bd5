"""``GET /``: what this service is and where to go from here, for a person who opens its address
in a browser. Rendered once at start-up from the services of the knowledge base; public like
the evidence pages (it holds no patient data), under the same Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from ipt_cds import __version__
from ipt_cds.http.evidence import HEADERS, templates
from ipt_cds.protocol.models import Service

router = APIRouter()


def render_home(services: Iterable[Service], auth_required: bool, preview: bool) -> bytes:
    page = templates().get_template("home.html")
    listed = sorted(services, key=lambda s: s.id)
    return page.render(
        services=listed, version=__version__, auth_required=auth_required, preview=preview
    ).encode()


@router.get(
    "/",
    summary="Home page: the services and links to the evidence, the API and the docs",
    response_class=HTMLResponse,
    responses={200: {"description": "An HTML page, the same for every caller."}},
    openapi_extra={"security": []},
)
async def home(request: Request) -> Response:
    body: bytes = request.app.state.home
    return HTMLResponse(body, headers=HEADERS)
