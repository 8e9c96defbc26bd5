"""Helpers of the FHIR client's own tests (test_fhir_client.py, test_fhir_client_misbehaving.py):
searchset pages, and one fetch through the client the service builds."""

from __future__ import annotations

from typing import Any

import pytest

from ipt_cds.fhir.client import FhirClient
from ipt_cds.ops.config import Settings
from ipt_cds.ops.metrics import Metrics
from ipt_cds.protocol.errors import PrefetchUnavailable

from .conftest import FHIR_BASE, TOKEN, Json

CONDITIONS = "Condition?patient=pat-1"


def search_page(*resources: Json, next_url: str | None = None) -> Json:
    page: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url is not None:
        page["link"] = [{"relation": "next", "url": next_url}]
    return page


def ids_of(pages: list[Json]) -> list[str]:
    return [e["resource"]["id"] for page in pages for e in page.get("entry", [])]


async def fetch_resources(
    queries: dict[str, str],
    token: str | None = TOKEN,
    metrics: Metrics | None = None,
    base: str = FHIR_BASE,
    **overrides: Any,
) -> dict[str, list[Json]]:
    """One fetch through the client the service builds: no transport given, so respx's patch
    of httpcore answers (nothing leaves the process)."""
    settings = Settings(fhir_retries=0).model_copy(update=overrides)
    async with FhirClient.make_http(settings) as http:
        fetched = await FhirClient(http, settings, metrics).fetch_all(base, queries, token)
        return fetched.resources


async def fetch_failure(queries: dict[str, str], **overrides: Any) -> PrefetchUnavailable:
    with pytest.raises(PrefetchUnavailable) as raised:
        await fetch_resources(queries, **overrides)
    return raised.value
