"""The OpenAPI document: FastAPI's, plus the request bodies we parse ourselves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.protocol.models import REQUEST_MODELS, FeedbackRequest


def schema(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    # Path parameters are plain strings and bodies are validated by us (400, never 422).
    for path in doc["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    # Every hook's request model, from the registry, so a new hook is described without an
    # edit here.
    hooks: list[type[BaseModel]] = list(REQUEST_MODELS.values())
    bodies: list[type[BaseModel]] = [*hooks, FeedbackRequest]
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies], ref_template="#/components/schemas/{model}"
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(defs.get("$defs", {}))
    schemas["HookRequest"] = {
        "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in hooks],
        "discriminator": {"propertyName": "hook"},
    }
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    # CDS Hooks client authentication: a JWT signed by the EHR, required when
    # IPT_CDS_AUTH_MODE=required (docs/security.md); optional otherwise.
    doc["components"]["securitySchemes"] = {
        "cdsHooksJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    doc["security"] = [{}, {"cdsHooksJwt": []}]
    app.openapi_schema = doc
    return doc
