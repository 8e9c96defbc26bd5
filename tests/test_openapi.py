from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from ipt_cds.cli import openapi_yaml
from ipt_cds.http.openapi import FHIR_ID, NO_NUL, REFERENCE
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS, FeedbackItem, PatientViewContext

OPENAPI = Path(__file__).resolve().parents[1] / "openapi.yaml"


def test_openapi_yaml_equals_what_the_app_serves(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    assert yaml.safe_load(OPENAPI.read_text()) == served, (
        "openapi.yaml is stale: run `ipt-cds openapi > openapi.yaml`"
    )
    assert OPENAPI.read_text() == openapi_yaml()


def test_openapi_describes_every_endpoint_and_body(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) == {
        "/",
        "/cds-services",
        "/cds-services/{service_id}",
        "/cds-services/{service_id}/feedback",
        "/stats/cards",
        "/stats",
        "/health",
        "/ready",
        "/metrics",
        "/evidence",
        "/evidence/{rule_id}",
    }
    schemas = doc["components"]["schemas"]
    hook = doc["paths"]["/cds-services/{service_id}"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HookRequest"
    )
    assert set(hook["responses"]) == {"200", "400", "401", "404", "412", "413", "503"}
    assert doc["components"]["securitySchemes"]["cdsHooksJwt"]["bearerFormat"] == "JWT"
    for name in ("HookRequest", "OrderSelectRequest", "Card", "Suggestion", "FeedbackRequest"):
        assert name in schemas
    refs = {
        line.split("#/components/schemas/")[1].strip("'\" ")
        for line in yaml.safe_dump(doc).splitlines()
        if "#/components/schemas/" in line
    }
    assert refs <= set(schemas), f"dangling references: {refs - set(schemas)}"


def test_openapi_hook_request_is_one_of_the_registered_request_models(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    one_of = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["HookRequest"]["oneOf"]]
    assert one_of == [model.__name__ for model in REQUEST_MODELS.values()]
    for hook, model in REQUEST_MODELS.items():
        assert schemas[model.__name__]["properties"]["hook"]["const"] == hook


def test_the_service_ids_are_an_enum_of_the_knowledge_bases_services(
    client: TestClient, knowledge: Knowledge
) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/cds-services/{service_id}", "/cds-services/{service_id}/feedback"):
        (parameter,) = doc["paths"][path]["post"]["parameters"]
        assert parameter["name"] == "service_id"
        assert parameter["schema"]["enum"] == sorted(knowledge.services)


def _accepted(pattern: str, value: str) -> bool:
    # JSON Schema patterns are ECMA-262: "$" is the end of the input, never before a newline.
    return re.search(pattern.removesuffix("$") + r"\Z", value) is not None


IDS = ["pat-1", "a" * 64, "a" * 65, "", "Patient/pat-1", "pat 1", "pät", "a.b-C9", "pat-1\n"]
REFERENCES = [
    "Practitioner/123",
    "PractitionerRole/a.b-c",
    "practitioner/123",
    "P/1",
    "Practitioner/",
    "Practitioner/a/b",
    "Practitioner/" + "a" * 65,
    "123",
    "Practitioner/123\n",
    " Practitioner/123",
]


@pytest.mark.parametrize("value", IDS)
def test_the_fhir_id_pattern_takes_what_the_models_take(value: str) -> None:
    context = {"userId": "Practitioner/1", "patientId": value, "encounterId": value}
    accepted = _valid(PatientViewContext, context)
    assert accepted == _accepted(FHIR_ID, value), value


@pytest.mark.parametrize("value", REFERENCES)
def test_the_reference_pattern_takes_what_the_models_take(value: str) -> None:
    context = {"userId": value, "patientId": "pat-1"}
    assert _valid(PatientViewContext, context) == _accepted(REFERENCE, value), value


@pytest.mark.parametrize("value", ["c-1", "", "a\x00b", "\x00", "ü" * 128])
def test_the_stored_ids_pattern_takes_what_the_models_take(value: str) -> None:
    item = {"card": value, "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}
    in_range = 1 <= len(value) <= 128
    assert _valid(FeedbackItem, item) == (in_range and _accepted(NO_NUL, value)), value


def _valid(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_context_and_prefetch_constraints_are_described(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("PatientViewContext", "OrderSignContext", "OrderSelectContext"):
        properties = schemas[name]["properties"]
        assert properties["userId"]["pattern"] == REFERENCE
        assert properties["patientId"]["pattern"] == FHIR_ID
        assert "not a reference" in properties["patientId"]["description"]
    selections = schemas["OrderSelectContext"]["properties"]["selections"]
    assert selections["items"]["pattern"] == REFERENCE
    assert "draftOrders" in selections["description"]
    resource = {"$ref": "#/components/schemas/FhirResource"}
    assert schemas["FhirResource"]["required"] == ["resourceType"]
    assert schemas["BundleEntry"]["properties"]["resource"] == resource
    for model in REQUEST_MODELS.values():
        prefetch = schemas[model.__name__]["properties"]["prefetch"]["anyOf"][0]
        assert prefetch["additionalProperties"]["anyOf"] == [resource, {"type": "null"}]
        # the keys the hook's services ask for, each with its template
        assert "patient" in prefetch["properties"]
        assert prefetch["properties"]["patient"]["description"] == "`Patient/{{context.patientId}}`"
