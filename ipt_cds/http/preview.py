"""``/preview``: the cards of a fixture or of a pasted CDS Hooks request, as an EHR shows them,
for a CDS committee reading card text and an integrator trying requests. Server-rendered, no
script; the request runs through the same pipeline as a hook call, in this process; its
Accept and Dismiss buttons send feedback through the same path as an EHR's, which keeps it, but
the statistics count it apart: the preview's cards carry uuids minted for a service named
``preview`` (ipt_cds/protocol/card_ids.py), which ``/stats/cards`` lists on its own, and no
snooze follows (the preview records no card as shown, so an override finds no patient).

Served when client authentication is off, or with ``IPT_CDS_PREVIEW=on`` (it runs requests
without a client token, so only on a trusted network); ``off`` never. It records no card as
shown, so once per visit and the shown counts are those of the EHR's calls alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ipt_cds.http.card_html import view
from ipt_cds.http.evidence import templates
from ipt_cds.http.jsonio import read_body
from ipt_cds.http.routes import AppState, checked_json, state_of, store_feedback
from ipt_cds.protocol.card_ids import PREVIEW_SERVICE, mint
from ipt_cds.protocol.errors import NotFound, ServiceError
from ipt_cds.protocol.models import FeedbackItem

# Forms post to this page only; styles inline; no script, frame or other resource.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The repository's fixture requests, when the service runs from a checkout.
FIXTURE_REQUESTS = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "requests"

router = APIRouter(include_in_schema=False)


def _state(request: Request) -> AppState:
    state = state_of(request)
    if not state.settings.preview_served:
        raise NotFound("The preview is off (IPT_CDS_PREVIEW).", code="not_found")
    return state


@cache
def _fixtures() -> tuple[str, ...]:
    """Listed once per process: the files do not change while the service runs."""
    if not FIXTURE_REQUESTS.is_dir():
        return ()
    return tuple(
        sorted(p.stem for p in FIXTURE_REQUESTS.glob("*.json") if ".no-prefetch" not in p.name)
    )


def _page(status: int = 200, **context: Any) -> Response:
    values: dict[str, Any] = {
        "fixtures": _fixtures(),
        "chosen": "",
        "pasted": "",
        "cards": [],
        "service": "",
        "notice": None,
        "problem": None,
    }
    values.update(context)
    body = templates().get_template("preview.html").render(**values)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


@router.get("/preview")
async def preview_page(request: Request) -> Response:
    _state(request)
    notice = "Feedback stored." if request.query_params.get("stored") else None
    return _page(notice=notice)


@router.post("/preview")
async def preview_cards(request: Request) -> Response:
    state = _state(request)
    form = await _form(request, state)
    chosen, pasted = form.get("fixture", ""), form.get("request", "").strip()
    try:
        if chosen:
            if chosen not in _fixtures():
                raise NotFound(f"No fixture {chosen[:100]!r}.", code="not_found")
            body = json.loads((FIXTURE_REQUESTS / f"{chosen}.json").read_text())
        else:
            body = checked_json(pasted.encode(), state.settings, "pasted request")
        hook = body.get("hook")
        service = next((s for s in state.knowledge.services.values() if s.hook == hook), None)
        if service is None:
            raise NotFound(f"No service answers the hook {str(hook)[:60]!r}.", code="not_found")
        result = await state.pipeline.run(
            service,
            body,
            fhir=state.fhir,
            fhir_allowed=state.fhir_allowed(None),
            now=state.clock(),
        )
    except ServiceError as exc:
        return _page(400, problem=exc.message, chosen=chosen, pasted=pasted)
    base = str(request.base_url).rstrip("/")
    cards = [
        view(
            rule,
            card.model_copy(update={"uuid": mint(PREVIEW_SERVICE, rule)}),
            f"{base}/evidence/{rule}",
        )
        for rule, card in result.fired
    ]
    return _page(cards=cards, service=service.id, chosen=chosen, pasted=pasted)


@router.post("/preview/feedback")
async def preview_feedback(request: Request) -> Response:
    state = _state(request)
    form = await _form(request, state)
    service = state.service(form.get("service", ""))
    item: dict[str, Any] = {
        "card": form.get("card", ""),
        "outcome": form.get("outcome", ""),
        "outcomeTimestamp": datetime.now(UTC).isoformat(),
    }
    if form.get("suggestion"):
        item["acceptedSuggestions"] = [{"id": form["suggestion"]}]
    if form.get("reason"):
        code, system, display = [*form["reason"].split("|", 2), "", ""][:3]
        item["overrideReason"] = {"reason": {"code": code, "system": system, "display": display}}
    try:
        items = [FeedbackItem.model_validate(item)]
    except ValidationError:
        return _page(400, problem="That feedback is not valid.")
    await store_feedback(state, service, items)
    # Post/redirect/get: a reload does not send the feedback again.
    return RedirectResponse("../preview?stored=1", status_code=303, headers=HEADERS)


async def _form(request: Request, state: AppState) -> dict[str, str]:
    raw = await read_body(request, state.settings.max_body_bytes)
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
