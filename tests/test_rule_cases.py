"""Every case of fhir_fixtures/cases/ through the pipeline (request -> record -> facts ->
rules -> cards, as a hook call runs it, without HTTP): the cards must be exactly the expected
rules with the expected indicators, with full prefetch, with the prefetch a FHIR server answers
to the discovery templates (their code and status filters applied), and through the FHIR fetch
path alike. The HTTP layer around the pipeline is tested once per hook elsewhere
(tests/test_server.py, tests/test_fixture_files.py)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from ipt_cds.devtools.fixtures import COULD_NOT_READ, Case, load_cases
from ipt_cds.fhir.client import FhirClient
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.pipeline import Pipeline
from ipt_cds.protocol.vocabulary import SYSTEM_ALIASES
from ipt_cds.replay.search import compile_searches

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, FakeFhir

CASES = load_cases()
SETTINGS = Settings(database_url="sqlite://", fhir_retries=0, fhir_allowlist=[FHIR_BASE])


@pytest.fixture(scope="module")
def pipeline(knowledge: Knowledge) -> Pipeline:
    return Pipeline(knowledge)


def _cards(pipeline: Pipeline, case: Case, body: dict[str, Any], fhir: FakeFhir) -> dict[str, str]:
    service = pipeline.knowledge.services[SERVICE_OF_HOOK[case.hook]]

    async def run() -> dict[str, str]:
        async with FhirClient.make_http(SETTINGS, fhir.transport()) as http:
            result = await pipeline.run(
                service,
                body,
                fhir=FhirClient(http, SETTINGS),
                fhir_allowed=lambda base: base == FHIR_BASE,
                now=NOW,
            )
        codes = [card.source.topic.code for _, card in result.fired if card.source.topic]
        assert len(set(codes)) == len(result.fired), "one card per rule"
        return {
            card.source.topic.code: card.indicator
            for _, card in result.fired
            if card.source.topic is not None
        }

    return asyncio.run(run())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_with_full_prefetch(case: Case, pipeline: Pipeline) -> None:
    fhir = FakeFhir()
    body = case.request(NOW, FHIR_BASE, prefetch=True)
    assert _cards(pipeline, case, body, fhir) == case.expect, case.describe
    assert fhir.requests == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_with_prefetch_as_a_server_answers_the_templates(
    case: Case, pipeline: Pipeline
) -> None:
    """The full prefetch holds every resource; an EHR answers the templates with only what their
    filters select (e.g. no stopped order, no Observation of another code): no card may depend
    on what the templates do not ask for."""
    service = pipeline.knowledge.services[SERVICE_OF_HOOK[case.hook]]
    own: dict[str, list[dict[str, object]]] = defaultdict(list)
    for resource in case.resources(NOW):
        own[str(resource["resourceType"])].append(resource)
    body = case.request(NOW, FHIR_BASE, prefetch=False)
    drugs = {f"Medication/{r['id']}": r for r in own.get("Medication", [])}
    body["prefetch"] = {
        search.key: search.answer(case.patient_id, own, drugs.get)
        if search.key not in case.unreadable
        else COULD_NOT_READ
        for search in compile_searches(service)
    }
    fhir = FakeFhir()
    assert _cards(pipeline, case, body, fhir) == case.expect, case.describe
    assert fhir.requests == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_through_the_fetch_path(case: Case, pipeline: Pipeline) -> None:
    """A server that refuses what the case cannot read (403, as for a scope not granted)."""
    fhir = FakeFhir(resources=case.resources(NOW), fail=dict.fromkeys(case.refused_types, 403))
    body = case.request(NOW, FHIR_BASE, prefetch=False)
    assert _cards(pipeline, case, body, fhir) == case.expect, case.describe
    assert "Patient" in fhir.paths()


# Each code system our value sets are written in, by its OID: some EHRs send those.
OIDS = {name: oid for oid, name in SYSTEM_ALIASES.items() if oid.startswith("urn:oid:")}


def _as_oids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: OIDS.get(v, v) if k == "system" and isinstance(v, str) else _as_oids(v)
            for k, v in value.items()
        }
    return [_as_oids(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_with_its_code_systems_sent_as_oids_through_the_fetch_path(
    case: Case, pipeline: Pipeline
) -> None:
    """A server that ignores ``code=`` answers everything; the service filters the answer as
    the search asked (LOINC codes for the PHQ-9). A PHQ-9 coded with LOINC's OID is still a
    PHQ-9: the filter reads systems as the facts do, so it is not dropped."""
    resources = _as_oids(case.resources(NOW))
    fhir = FakeFhir(resources=resources, fail=dict.fromkeys(case.refused_types, 403))
    body = case.request(NOW, FHIR_BASE, prefetch=False)
    assert _cards(pipeline, case, body, fhir) == case.expect, case.describe


def test_every_rule_has_cases_inside_and_just_outside(knowledge: Knowledge) -> None:
    by_rule: dict[str, list[Case]] = defaultdict(list)
    for case in CASES:
        by_rule[case.rule].append(case)
    for rule in knowledge.rulebook.rules:
        cases = by_rule.get(rule.id, [])
        inside = [c for c in cases if c.name.startswith("in-") and rule.id in c.expect]
        outside = [c for c in cases if c.name.startswith("out-") and rule.id not in c.expect]
        assert inside, f"{rule.id}: no in- case fires it"
        assert outside, f"{rule.id}: no out- case stays just outside it"
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names are patient ids: they must be unique"
