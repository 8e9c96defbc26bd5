from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from service.cli import openapi_yaml
from service.protocol.models import REQUEST_MODELS

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
        "/cds-services",
        "/cds-services/{service_id}",
        "/cds-services/{service_id}/feedback",
        "/stats/cards",
        "/health",
        "/ready",
        "/metrics",
    }
    schemas = doc["components"]["schemas"]
    hook = doc["paths"]["/cds-services/{service_id}"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HookRequest"
    )
    assert set(hook["responses"]) == {"200", "400", "401", "404", "412", "413"}
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
