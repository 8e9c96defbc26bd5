from __future__ import annotations

from fastapi.testclient import TestClient

from ipt_cds.protocol.models import PREFETCH_TOKEN as TOKEN


def test_discovery_lists_three_services_for_their_hooks(client: TestClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [
        ("ipt-order-select", "order-select"),
        ("ipt-order-sign", "order-sign"),
        ("ipt-patient-view", "patient-view"),
    ]
    for service in services:
        assert service["title"]
        assert service["description"]
        assert set(service["prefetch"]) == {
            "patient",
            "conditions",
            "observations",
            "medications",
            "medicationStatements",
            "serviceRequests",
            "procedures",
        }


def test_discovery_prefetch_templates_ask_for_what_the_facts_read(client: TestClient) -> None:
    prefetch = client.get("/cds-services").json()["services"][0]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    for loinc in ("44261-6", "89204-2", "44260-8", "44259-0", "44254-1", "44251-7", "82810-3"):
        assert f"http://loinc.org|{loinc}" in prefetch["observations"]
    # Version 3: the PHQ-9 panels (whose components a code search does not see), and the
    # other items, which a panel's hasMember observations carry.
    for loinc in ("44249-1", "89206-7", "44250-9", "44255-8", "44258-2", "44252-5", "44253-3"):
        assert f"http://loinc.org|{loinc}" in prefetch["observations"]
    # Version 2: what the patient reports taking counts as current medication.
    assert prefetch["medicationStatements"].startswith("MedicationStatement?patient=")
    assert "status=active,intended,on-hold" in prefetch["medicationStatements"]
    for template in prefetch.values():
        assert TOKEN.findall(template) == ["context.patientId"]


def test_discovery_is_byte_identical_and_sorted(client: TestClient) -> None:
    first, second = client.get("/cds-services"), client.get("/cds-services")
    assert first.content == second.content
    assert first.headers["content-type"] == "application/json"
    service = first.json()["services"][0]
    assert list(service) == sorted(service)
    assert list(service["prefetch"]) == sorted(service["prefetch"])
    assert b"null" not in first.content
