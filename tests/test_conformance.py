"""The CDS Hooks test vectors: HL7 fhir-test-cases requests and the hooks library's contexts."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import DATA, SERVICE_OF_HOOK, VECTOR_FHIR_BASE, AppFactory, FakeFhir, load_json

CASES = DATA / "cds-hooks" / "fhir-test-cases"
LIBRARY = DATA / "cds-hooks" / "hooks-library"
GOOD = sorted(CASES.glob("cdshooks-request-*-good.json"))
BAD = sorted(CASES.glob("cdshooks-request-*-bad*.json"))
LIBRARY_R4 = {
    "order-select": LIBRARY / "order-select-1-example-r4.json",
    "order-sign": LIBRARY / "order-sign-1-example-r4.json",
    "patient-view": LIBRARY / "patient-view-1-examples.json",
}


def test_the_vectors_are_there() -> None:
    assert len(GOOD) == 4
    assert len(BAD) == 4


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_requests_are_accepted(path: Path, make_client: AppFactory) -> None:
    body = load_json(path)
    fhir = FakeFhir()
    client = make_client(fhir)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[body['hook']]}", json=body)
    if body["fhirServer"] != VECTOR_FHIR_BASE:
        # Valid, but its fhirServer is plain http on a public host: never contacted.
        assert response.status_code == 412, response.text
        assert response.json()["code"] == "fhir_server_not_allowed"
        assert fhir.requests == []
        return
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}
    # What the vector did not prefetch under our keys was read from its fhirServer.
    assert "Patient" in fhir.paths()


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_requests_are_rejected_with_400(path: Path, make_client: AppFactory) -> None:
    body = load_json(path)
    fhir = FakeFhir()
    client = make_client(fhir)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[body['hook']]}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert response.json()["field"].startswith(("context.", "prefetch."))
    assert fhir.requests == []


@pytest.mark.parametrize("hook", sorted(LIBRARY_R4))
def test_hooks_library_r4_contexts_are_accepted(hook: str, make_client: AppFactory) -> None:
    body = {
        "hook": hook,
        "hookInstance": "0d8a2b39-7bbb-4a4c-b5c3-6b8c0c1d2e3f",
        "fhirServer": "https://ehr.example.org/fhir",
        "context": load_json(LIBRARY_R4[hook])["context"],
    }
    client = make_client(FakeFhir())
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[hook]}", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}
