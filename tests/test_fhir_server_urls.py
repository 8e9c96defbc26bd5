"""A fhirServer that urlsplit cannot read is a server we may not contact (412), not a 500.
Found by the fuzzer once it reached the hook code (tests/test_fuzz.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ipt_cds.http.trust import allowed_base, normal_base

from .conftest import FHIR_BASE, hook_request


@pytest.mark.parametrize("url", ["http://[", "http://tgv[x", "https://]/fhir", "http://[::1"])
def test_an_unreadable_url_is_allowed_nowhere(url: str) -> None:
    with pytest.raises(ValueError, match="IPv6"):
        normal_base(url)
    assert not allowed_base(url, {normal_base(FHIR_BASE)})


def test_a_readable_url_is_compared_normalised() -> None:
    assert allowed_base("HTTPS://EHR.example.org/fhir/", {normal_base(FHIR_BASE)})


def test_a_hook_call_naming_an_unreadable_fhir_server_answers_412(client: TestClient) -> None:
    body = hook_request("order-sign")
    body["fhirServer"] = "http://tgv[x"
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert (response.status_code, response.json()["code"]) == (412, "fhir_server_not_allowed")
