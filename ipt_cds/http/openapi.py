"""The OpenAPI document: FastAPI's, plus the request bodies we parse ourselves, the service ids
as an enum, and the constraints on a request that the models check in code (a FHIR id, a
reference, a resource) written into the schemas, so that a client generator or a schema fuzzer
sends what the service takes (`ipt-cds openapi > openapi.yaml`; tests/test_openapi.py checks
that these patterns accept and refuse what the models do)."""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ipt_cds.protocol.models import REQUEST_MODELS, FeedbackRequest, Service

# What ipt_cds/protocol/models.py checks, as JSON Schema patterns.
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
REFERENCE = r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$"
# Ids kept verbatim in the store (whose PostgreSQL text cannot hold NUL).
NO_NUL = r"^[^\u0000]*$"

_USER_ID = {
    "pattern": REFERENCE,
    "description": "The user, as a FHIR relative reference `{type}/{id}`: `Practitioner/123`, "
    "`PractitionerRole/…`, `Patient/…` or `RelatedPerson/…`. A bare id answers 400.",
    "examples": ["Practitioner/123"],
}
_PATIENT_ID = {
    "pattern": FHIR_ID,
    "description": "The patient's FHIR id, not a reference: `pat-1`, never `Patient/pat-1` (400).",
    "examples": ["pat-1"],
}
_ENCOUNTER_ID = {"pattern": FHIR_ID, "description": "The encounter's FHIR id, not a reference."}
_FHIR_ID_FIELD = {"pattern": FHIR_ID, "description": "A FHIR id, not a reference."}
_SELECTIONS = {
    "description": "The orders just selected, each the `{type}/{id}` of a resource among the "
    "entries of `draftOrders`. A selection that is not one of the draft orders answers 400 "
    "(the schema cannot say so).",
}
_RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "additionalProperties": True,
    "description": "A FHIR resource: a JSON object with a `resourceType`, read tolerantly.",
}
_RESOURCE_REF = {"$ref": "#/components/schemas/FhirResource"}
_PREFETCH = {
    "description": "The prefetch templates of the service (discovery), answered: each value a "
    "FHIR resource (with `resourceType`; a search is a Bundle) or `null` for no data. A key "
    "that is missing is fetched from `fhirServer`; one that cannot be fetched answers 412.",
}


# A token is for a server: with a fhirAuthorization object, fhirServer is a URL (not null).
_SERVER_WITH_TOKEN = {
    "if": {
        "required": ["fhirAuthorization"],
        "properties": {"fhirAuthorization": {"type": "object"}},
    },
    "then": {"required": ["fhirServer"], "properties": {"fhirServer": {"type": "string"}}},
}


def _nothing() -> dict[str, Any]:
    """Absent, null or empty: a fresh object each time (YAML would alias a shared one)."""
    return {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}


# An accepted outcome lists the suggestions taken and no override reason; an overridden one
# lists no suggestions.
_OUTCOME_FIELDS = {
    "if": {"properties": {"outcome": {"const": "accepted"}}},
    "then": {
        "required": ["acceptedSuggestions"],
        "properties": {
            "acceptedSuggestions": {"type": "array", "minItems": 1},
            "overrideReason": {"type": "null"},
            "overrideReasons": _nothing(),
        },
    },
    "else": {"properties": {"acceptedSuggestions": _nothing()}},
    "description": "An `accepted` outcome lists its `acceptedSuggestions` and no override "
    "reason; an `overridden` one lists no suggestions, and may give coded reasons "
    "(`overrideReason`, or Epic's plural `overrideReasons`).",
}


def schema(app: FastAPI, services: Mapping[str, Service]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    # Path parameters are plain strings and bodies are validated by us (400, never 422).
    for path in doc["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
            _pin_service_ids(operation, services)
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
    for model in schemas.values():
        _describe_constraints(model)
    for hook, model in REQUEST_MODELS.items():
        _prefetch_keys(schemas[model.__name__], hook, services)
    schemas["FhirResource"] = deepcopy(_RESOURCE)
    schemas["HookRequest"] = {
        "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in hooks],
        "discriminator": {"propertyName": "hook"},
        "description": "The request of the hook the service answers (discovery names it): "
        "another hook answers 400 `hook_mismatch`, a body without a `hook` (e.g. a FHIR Bundle) "
        "400 `not_a_hook_request`.",
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


def _pin_service_ids(operation: dict[str, Any], services: Mapping[str, Service]) -> None:
    """``service_id`` is one of the services of cards/services.yaml; any other is a 404."""
    for parameter in operation.get("parameters", []):
        if parameter["name"] == "service_id" and parameter["in"] == "path":
            ids = sorted(services)
            parameter["schema"] = {**parameter["schema"], "enum": ids}
            hooks = ", ".join(f"`{i}` ({services[i].hook})" for i in ids)
            parameter["description"] = (
                f"A CDS Service of the discovery document: {hooks}. Another answers 404 "
                "`unknown_service`."
            )


def _describe_constraints(model: dict[str, Any]) -> None:
    """Write what the models check in code into one component schema, by field name, so that
    every hook's context (and one added later) gets them."""
    properties: dict[str, Any] = model.get("properties", {})
    if "userId" in properties:
        properties["userId"].update(deepcopy(_USER_ID))
    if "patientId" in properties:
        properties["patientId"].update(deepcopy(_PATIENT_ID))
    if "encounterId" in properties:
        _string_branch(properties["encounterId"]).update(_ENCOUNTER_ID)
    if "selections" in properties:
        properties["selections"].update(_SELECTIONS)
        properties["selections"]["items"].update({"pattern": REFERENCE})
    if model.get("title") == "FhirAuthorization" and "patient" in properties:
        _string_branch(properties["patient"]).update(_FHIR_ID_FIELD)
    if model.get("title") == "BundleEntry" and "resource" in properties:
        properties["resource"] = dict(_RESOURCE_REF)
    if "prefetch" in properties and "hook" in properties:
        prefetch = properties["prefetch"]
        values = _object_branch(prefetch)["additionalProperties"]
        values["anyOf"] = [dict(_RESOURCE_REF), {"type": "null"}]
        prefetch.update(_PREFETCH)
    if "fhirServer" in properties and "fhirAuthorization" in properties:
        properties["fhirServer"]["description"] = (
            "The FHIR server's base URL (http or https), required with `fhirAuthorization`."
        )
        model.update(deepcopy(_SERVER_WITH_TOKEN))
    if model.get("title") == "FeedbackItem":
        model.update(deepcopy(_OUTCOME_FIELDS))
        properties["outcomeTimestamp"]["description"] = (
            "When the clinician acted: a date-time, with an offset, that has a UTC form."
        )
    for field in properties.values():
        if field.get("type") == "integer":
            # orjson reads a larger integer as a float, which an int field refuses.
            field.update(minimum=-(2**63), maximum=2**64 - 1)
    for stored in ("card", "hookInstance"):
        if stored in properties and properties[stored].get("type") == "string":
            properties[stored]["pattern"] = NO_NUL


def _prefetch_keys(model: dict[str, Any], hook: str, services: Mapping[str, Service]) -> None:
    """Name the prefetch keys the services of ``hook`` ask for, each with its template."""
    templates: dict[str, set[str]] = {}
    for service in services.values():
        if service.hook == hook:
            for key, template in (service.prefetch or {}).items():
                templates.setdefault(key, set()).add(template)
    prefetch = model.get("properties", {}).get("prefetch")
    if not templates or prefetch is None:
        return
    _object_branch(prefetch)["properties"] = {
        key: {
            "anyOf": [dict(_RESOURCE_REF), {"type": "null"}],
            "description": " or ".join(f"`{t}`" for t in sorted(templates[key])),
        }
        for key in sorted(templates)
    }


def _string_branch(field: dict[str, Any]) -> dict[str, Any]:
    """The ``string`` schema of an optional field (``anyOf: [string, null]``), or the field."""
    for branch in field.get("anyOf", []):
        if branch.get("type") == "string":
            found: dict[str, Any] = branch
            return found
    return field


def _object_branch(field: dict[str, Any]) -> dict[str, Any]:
    for branch in field.get("anyOf", []):
        if branch.get("type") == "object":
            found: dict[str, Any] = branch
            return found
    return field
