"""The resources a prefetch template ``_include``s, where the answer left them out.

``_include=MedicationRequest:medication`` asks for the Medication each order references. A
server that does not support ``_include`` (or ignores it), and an EHR whose prefetch leaves it
out, give the orders without their drugs; the Medications are then read by id. One that still
cannot be read leaves its drug unknown (ipt_cds/clinical/medications.py), never absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl

from ipt_cds.fhir.answers import parse_reference
from ipt_cds.protocol.models import Resource

# _include's search parameter -> the element that holds the reference.
ELEMENTS = {"medication": "medicationReference"}
# The most references read for one call: beyond, the drugs stay unknown.
MAX_READS = 50


@lru_cache(maxsize=256)
def included(template: str) -> tuple[tuple[str, str], ...]:
    """(resource type searched, element referencing what it includes) per ``_include``; a
    template's, parsed once (every call asks)."""
    path, _, params = template.strip().lstrip("/").partition("?")
    out = []
    for name, value in parse_qsl(params, keep_blank_values=True):
        source, _, param = value.partition(":")
        if name == "_include" and source == path and param in ELEMENTS:
            out.append((source, ELEMENTS[param]))
    return tuple(out)


def missing(template: str, resources: Iterable[Resource], base: str | None) -> list[str]:
    """The ``Type/id`` references of the template's ``_include``s absent from its answer: relative
    ones, and absolute ones on ``base`` (another server's ids mean nothing on this one)."""
    includes = included(template)
    if not includes:
        return []
    resources = list(resources)
    wanted: list[str] = []
    for kind, element in includes:
        for resource in resources:
            if resource.get("resourceType") != kind:
                continue
            reference = resource.get(element)
            text = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(text, str) or not _on(text, base):
                continue
            named = parse_reference(text)
            if named is not None:
                wanted.append(f"{named[0]}/{named[1]}")
    present = {
        f"{r.get('resourceType')}/{r.get('id')}" for r in resources if isinstance(r.get("id"), str)
    }
    return list(dict.fromkeys(w for w in wanted if w not in present))


def _on(text: str, base: str | None) -> bool:
    if text.startswith("#"):
        return False  # contained: in the resource itself
    if "://" not in text and not text.startswith("urn:"):
        return True
    return base is not None and text.startswith(base.rstrip("/") + "/")
