"""ipt_cds/fhir/client.py on its own, against a FHIR server faked with respx.

tests/test_fetch.py drives the client through the hook endpoints with ``FakeFhir``; these tests
call ``FhirClient.fetch_all`` directly on the real ``httpx.AsyncClient`` that ``make_http``
builds, with one respx route per URL, so that each behaviour is pinned to the requests it makes:
how many, to where, with which headers, and what comes back.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from ipt_cds.fhir import refusals
from ipt_cds.fhir.client import Fetched, FhirClient
from ipt_cds.ops.config import Settings
from ipt_cds.ops.metrics import Metrics
from ipt_cds.protocol.errors import PrefetchUnavailable

from .conftest import FHIR_BASE, TOKEN, hypertension, patient
from .fhir_client_kit import CONDITIONS, fetch_failure, fetch_resources, ids_of, search_page

pytestmark = pytest.mark.anyio

# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transient",
    [
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(504),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["502", "503", "504", "connect-error", "disconnected"],
)
async def test_a_transient_failure_is_retried_and_the_retry_answers(
    fhir: respx.MockRouter, transient: httpx.Response | Exception
) -> None:
    route = fhir.get(f"/{CONDITIONS}")
    route.side_effect = [transient, httpx.Response(200, json=search_page(hypertension("c1")))]
    fetched = await fetch_resources({"conditions": CONDITIONS}, fhir_retries=1)
    assert ids_of(fetched["conditions"]) == ["c1"]
    assert route.call_count == 2
    for call in route.calls:
        assert call.request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_connection_errors_are_retried_a_bounded_number_of_times(
    fhir: respx.MockRouter,
) -> None:
    route = fhir.get(f"/{CONDITIONS}").mock(side_effect=httpx.ConnectError("refused"))
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_retries=3)
    assert failure.code == "fhir_unavailable"
    assert route.call_count == 4


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (httpx.Response(500), "fhir_unavailable"),
        (httpx.Response(501), "fhir_unavailable"),
        (httpx.Response(401), "fhir_unauthorized"),
        (httpx.Response(429), "fhir_error"),
        (httpx.ReadTimeout("slow"), "fhir_timeout"),
    ],
    ids=["500", "501", "401", "429", "read-timeout"],
)
async def test_other_failures_are_not_retried(
    fhir: respx.MockRouter, answer: httpx.Response | Exception, code: str
) -> None:
    """Only connection errors and 502/503/504 say "try again"; a timeout has spent the time a
    retry would need, and the rest would answer the same."""
    route = fhir.get(f"/{CONDITIONS}").mock(side_effect=[answer, httpx.Response(200)])
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_retries=3)
    assert failure.code == code
    assert route.call_count == 1


# --- what an answer means -----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_refusal_names_fhir_authorization(fhir: respx.MockRouter, status: int) -> None:
    fhir.get(f"/{CONDITIONS}").respond(status, json={"resourceType": "OperationOutcome"})
    fhir.get("/Patient/pat-1").respond(200, json=patient())
    failure = await fetch_failure({"patient": "Patient/pat-1", "conditions": CONDITIONS})
    assert failure.code == "fhir_unauthorized"
    assert f"HTTP {status}" in failure.message
    assert "fhirAuthorization" in failure.message


@pytest.mark.parametrize("status", [404, 410])
async def test_a_read_of_a_missing_resource_is_no_data(fhir: respx.MockRouter, status: int) -> None:
    read = fhir.get("/Patient/pat-1").respond(status)
    fetched = await fetch_resources({"patient": "Patient/pat-1"})
    assert fetched == {"patient": []}
    assert read.call_count == 1


async def test_a_search_answering_404_is_an_error_not_an_empty_result(
    fhir: respx.MockRouter,
) -> None:
    """404 on a search means the server does not know the endpoint: saying "no conditions"
    would hide a contraindication."""
    fhir.get(f"/{CONDITIONS}").respond(404)
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_error"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>login</html>"),
        httpx.Response(200, json={"entry": []}),
        httpx.Response(200, json=[{"resourceType": "Bundle"}]),
        httpx.Response(200, content=b""),
    ],
    ids=["html", "no-resource-type", "json-array", "empty"],
)
async def test_an_answer_that_is_not_a_fhir_resource_is_an_error(
    fhir: respx.MockRouter, answer: httpx.Response
) -> None:
    fhir.get(f"/{CONDITIONS}").mock(return_value=answer)
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_error"
    assert "not FHIR JSON" in failure.message


async def test_redirects_are_not_followed(fhir: respx.MockRouter) -> None:
    """A redirect could carry the bearer token to another host; it is an error instead."""
    elsewhere = fhir.get("https://login.example.net/fhir/Condition").respond(
        200, json=search_page(hypertension("c1"))
    )
    fhir.get(f"/{CONDITIONS}").respond(
        302, headers={"Location": "https://login.example.net/fhir/Condition"}
    )
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_error"
    assert not elsewhere.called


async def test_every_query_is_read_once_with_the_headers_and_url_it_needs(
    fhir: respx.MockRouter,
) -> None:
    read = fhir.get("/Patient/pat-1").respond(200, json=patient())
    search = fhir.get("/Condition", params={"patient": "pat-1"}).respond(
        200, json=search_page(hypertension("c1"), hypertension("c2"))
    )
    fetched = await fetch_resources(
        {"patient": "Patient/pat-1", "conditions": f"/{CONDITIONS}"}, base=f"{FHIR_BASE}/"
    )
    assert fetched["patient"] == [patient()]
    assert ids_of(fetched["conditions"]) == ["c1", "c2"]
    assert (read.call_count, search.call_count) == (1, 1)
    assert str(search.calls.last.request.url) == f"{FHIR_BASE}/{CONDITIONS}"
    for route in (read, search):
        headers = route.calls.last.request.headers
        assert headers["accept"] == "application/fhir+json"
        assert headers["authorization"] == f"Bearer {TOKEN}"


# --- paging -------------------------------------------------------------------------------


async def test_next_links_on_the_same_origin_are_followed_with_the_token(
    fhir: respx.MockRouter,
) -> None:
    # The server's own paging URLs, which need not look like the original query.
    page2 = f"{FHIR_BASE}?_getpages=abc&_getpagesoffset=1"
    page3 = f"{FHIR_BASE}?_getpages=abc&_getpagesoffset=2"
    first = fhir.get(f"/{CONDITIONS}").respond(
        200, json=search_page(hypertension("c1"), next_url=page2)
    )
    second = fhir.get(page2).respond(200, json=search_page(hypertension("c2"), next_url=page3))
    third = fhir.get(page3).respond(200, json=search_page(hypertension("c3")))
    fetched = await fetch_resources({"conditions": CONDITIONS})
    assert ids_of(fetched["conditions"]) == ["c1", "c2", "c3"]
    assert len(fetched["conditions"]) == 3, "one entry per page read"
    for route in (first, second, third):
        assert route.call_count == 1
        assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "elsewhere",
    [
        "http://ehr.example.org/fhir/Condition?page=2",  # the same host over plain http
        "https://ehr.example.org:8443/fhir/Condition?page=2",  # another port
        "https://ehr.example.org.evil.example/fhir/Condition?page=2",  # a look-alike host
    ],
    ids=["http", "port", "look-alike"],
)
async def test_next_links_to_another_origin_are_not_followed(
    fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture, elsewhere: str
) -> None:
    """The bearer token belongs to fhirServer's origin: scheme, host and port."""
    other = fhir.get(elsewhere).respond(200, json=search_page(hypertension("stolen")))
    fhir.get(f"/{CONDITIONS}").respond(
        200, json=search_page(hypertension("c1"), next_url=elsewhere)
    )
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        fetched = await fetch_resources({"conditions": CONDITIONS})
    assert ids_of(fetched["conditions"]) == ["c1"]
    assert not other.called
    assert "next link to another origin not followed" in caplog.text


async def test_a_next_link_that_loops_stops_at_the_page_cap(fhir: respx.MockRouter) -> None:
    """A server whose last page points at itself must not keep the EHR waiting."""
    url = f"{FHIR_BASE}/{CONDITIONS}"
    route = fhir.get(f"/{CONDITIONS}").respond(
        200, json=search_page(hypertension("c1"), next_url=url)
    )
    fetched = await fetch_resources({"conditions": CONDITIONS}, fhir_max_pages=4)
    assert len(fetched["conditions"]) == 4
    assert route.call_count == 4


# --- the token and the metrics ------------------------------------------------------------


async def test_the_token_never_reaches_a_log_line_or_a_message(
    fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Every warning the client can write, and httpx's own request log, at DEBUG."""
    fhir.get("/Patient/pat-1").side_effect = [httpx.ConnectError(TOKEN), httpx.Response(404)]
    fhir.get("/Observation?patient=pat-1").respond(
        200, json=search_page(next_url="https://other.example.com/fhir?page=2")
    )
    fhir.get(f"/{CONDITIONS}").respond(200, json=search_page(next_url=f"{FHIR_BASE}/{CONDITIONS}"))
    fhir.get("/Procedure?patient=pat-1").side_effect = [httpx.Response(503), httpx.Response(403)]
    queries = {
        "patient": "Patient/pat-1",
        "observations": "Observation?patient=pat-1",
        "conditions": CONDITIONS,
        "procedures": "Procedure?patient=pat-1",
    }
    with caplog.at_level(logging.DEBUG):
        failure = await fetch_failure(queries, fhir_retries=1, fhir_max_pages=2)
    assert failure.code == "fhir_unauthorized"
    logged = caplog.text
    for line in (
        "fhir patient: ConnectError (attempt 1)",
        "fhir patient: HTTP 404 on read",
        "next link to another origin not followed",
        "fhir conditions: stopped after 2 pages",
        "fhir procedures: HTTP 503 (attempt 1)",
        "fhir procedures: HTTP 403",
    ):
        assert line in logged
    assert TOKEN not in logged
    assert TOKEN not in failure.message


async def test_no_authorization_header_without_a_token(fhir: respx.MockRouter) -> None:
    read = fhir.get("/Patient/pat-1").respond(200, json=patient())
    await fetch_resources({"patient": "Patient/pat-1"}, token=None)
    assert "authorization" not in read.calls.last.request.headers


async def test_metrics_count_each_failure_by_code_and_time_each_key(
    fhir: respx.MockRouter,
) -> None:
    metrics = Metrics()
    fhir.get("/Patient/pat-1").respond(200, json=patient())
    fhir.get(f"/{CONDITIONS}").respond(403)
    await fetch_resources({"patient": "Patient/pat-1"}, metrics=metrics)
    with pytest.raises(PrefetchUnavailable):
        await fetch_resources({"conditions": CONDITIONS}, metrics=metrics)

    def sample(name: str, labels: dict[str, str]) -> float | None:
        value: float | None = metrics.registry.get_sample_value(name, labels)
        return value

    assert sample("ipt_cds_fhir_fetch_seconds_count", {"key": "patient"}) == 1
    assert sample("ipt_cds_fhir_errors_total", {"code": "fhir_unauthorized"}) == 1
    assert sample("ipt_cds_fhir_errors_total", {"code": "fhir_unavailable"}) is None


# --- the request's own fhirServer and token -----------------------------------------------


@pytest.mark.parametrize(
    "base", ["http://[", "http://ehr.example.org:99999/fhir", "ftp://ehr.example.org", "https://"]
)
async def test_a_fhir_server_that_is_not_a_url_is_a_412(fhir: respx.MockRouter, base: str) -> None:
    failure = await fetch_failure({"patient": "Patient/pat-1"}, base=base)
    assert failure.code == "fhir_server_not_allowed"
    assert not fhir.calls


@pytest.mark.parametrize("token", ["tokén", "tok\r\nX-Injected: 1", "two words", "tok\x00"])
async def test_a_token_no_header_can_carry_is_refused_unsent_and_unlogged(
    fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    with caplog.at_level(logging.DEBUG):
        failure = await fetch_failure({"patient": "Patient/pat-1"}, token=token)
    assert failure.code == "fhir_unauthorized"
    assert not fhir.calls
    assert token not in caplog.text
    assert token not in failure.message


async def test_a_next_link_that_is_not_a_url_is_not_followed(fhir: respx.MockRouter) -> None:
    fhir.get(f"/{CONDITIONS}").respond(
        200, json=search_page(hypertension("c1"), next_url="http://[")
    )
    fetched = await fetch_resources({"conditions": CONDITIONS})
    assert ids_of(fetched["conditions"]) == ["c1"]


# --- every failure is one 412 -------------------------------------------------------------


async def test_an_unexpected_error_in_a_query_is_a_412_not_an_exception_group(
    fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    fhir.get(f"/{CONDITIONS}").mock(side_effect=RuntimeError(f"quoting {TOKEN}"))
    fhir.get("/Patient/pat-1").respond(200, json=patient())
    with caplog.at_level(logging.DEBUG):
        failure = await fetch_failure({"patient": "Patient/pat-1", "conditions": CONDITIONS})
    assert failure.code == "fhir_error"
    assert "fhir conditions: unexpected RuntimeError" in caplog.text
    assert TOKEN not in caplog.text


def test_the_first_meaningful_failure_of_a_group_is_the_answer() -> None:
    own = PrefetchUnavailable("refused", code="fhir_unauthorized")
    nested = ExceptionGroup("outer", [ValueError("x"), ExceptionGroup("inner", [own])])
    assert refusals.first_meaningful(nested) is own
    timed_out = ExceptionGroup("g", [KeyError("k"), httpx.ReadTimeout("slow")])
    assert refusals.first_meaningful(timed_out).code == "fhir_timeout"
    assert refusals.first_meaningful(ExceptionGroup("g", [KeyError("k")])).code == "fhir_error"


# --- optional reads, capabilities, simpler searches ----------------------------------------------


async def _fetched(queries: dict[str, str], optional: frozenset[str]) -> Fetched:
    settings = Settings(fhir_retries=0)
    async with FhirClient.make_http(settings) as http:
        return await FhirClient(http, settings).fetch_all(FHIR_BASE, queries, TOKEN, optional)


async def test_an_optional_read_refused_is_not_readable_and_the_rest_is_read(
    fhir: respx.MockRouter,
) -> None:
    fhir.get("/Patient/pat-1").respond(200, json=patient())
    outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "forbidden"}]}
    procedures = fhir.get("/Procedure").respond(403, json=outcome)
    got = await _fetched(
        {"patient": "Patient/pat-1", "procedures": "Procedure?patient=Patient/pat-1"},
        frozenset({"procedures"}),
    )
    assert got.resources["patient"][0]["id"] == "pat-1"
    assert got.unreadable == {"procedures": "403/forbidden"}
    assert procedures.call_count == 1, "a scope refusal is not asked again"


async def test_a_declined_search_is_asked_once_simpler(fhir: respx.MockRouter) -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        if "status" in request.url.params:
            return httpx.Response(400, json={"resourceType": "OperationOutcome"})
        order = {"resourceType": "MedicationRequest", "intent": "order"}
        stopped = {**order, "id": "m2", "status": "stopped"}
        active = {**order, "id": "m1", "status": "active"}
        plan = {**order, "id": "m3", "status": "active", "intent": "plan"}
        # Non-conformant (no intent): kept, for the facts to weigh.
        bare = {"resourceType": "MedicationRequest", "id": "m4", "status": "active"}
        return httpx.Response(200, json=search_page(active, stopped, plan, bare))

    fhir.get("/MedicationRequest").mock(side_effect=answer)
    query = "MedicationRequest?patient=Patient/pat-1&intent=order&status=active"
    got = await _fetched({"medications": query}, frozenset({"medications"}))
    assert [dict(r.url.params) for r in asked] == [
        {"patient": "Patient/pat-1", "intent": "order", "status": "active"},
        {"patient": "Patient/pat-1", "intent": "order"},
    ]
    # The status the simpler search left out is applied here.
    assert ids_of(got.resources["medications"]) == ["m1", "m4"]
    assert got.unreadable == {}


async def test_an_essential_read_declined_twice_is_a_412(fhir: respx.MockRouter) -> None:
    fhir.get("/Condition").respond(400, json={"resourceType": "OperationOutcome"})
    with pytest.raises(PrefetchUnavailable) as raised:
        await _fetched({"conditions": "Condition?patient=Patient/pat-1&category=x"}, frozenset())
    assert raised.value.code == "fhir_error"
    assert fhir.routes[-1].call_count == 2, "the search, then the simpler one"


async def test_a_capability_statement_shapes_the_searches(fhir: respx.MockRouter) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "Patient"},
                    {"type": "MedicationRequest", "searchParam": [{"name": "patient"}]},
                ],
            }
        ],
    }
    fhir.routes.clear()
    fhir.get("/metadata").respond(200, json=statement)
    orders = fhir.get("/MedicationRequest").respond(200, json=search_page())
    got = await _fetched(
        {
            "medications": "MedicationRequest?patient=Patient/pat-1&status=active"
            "&_include=MedicationRequest:medication",
            "statements": "MedicationStatement?patient=Patient/pat-1",
        },
        frozenset({"medications", "statements"}),
    )
    assert dict(orders.calls.last.request.url.params) == {"patient": "Patient/pat-1"}
    assert got.not_offered == {"statements"}
    assert got.unreadable == {}
