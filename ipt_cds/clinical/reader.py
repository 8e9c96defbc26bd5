"""Small typed accessors over FHIR R4 JSON that tolerate what real EHRs send.

Every function takes plain JSON and never raises on odd shapes: ``category`` as an object
instead of a list, a dateTime without a time zone, a decimal where an integer belongs, a
missing ``clinicalStatus``. Each checks the JSON type it meets (object, array, string, number)
and reads anything else as absent: ``component: 5``, a ``coding`` that is a string, a date of
2026-02-30, a score of NaN. What cannot be read is ``None`` or empty, and the caller decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

from ipt_cds.protocol.models import Resource
from ipt_cds.protocol.vocabulary import SYSTEM_ALIASES

# YYYY, YYYY-MM or YYYY-MM-DD, then the end or a time: not 99999-01-01, 20261125 or 2026-1-5.
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?![\d-])", re.ASCII)
# A decimal as FHIR writes it (sign, digits, fraction, exponent), in ASCII: float() alone would
# also take "nan", "Infinity", "1_5" and digits of other scripts.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_FLOAT_MAX = 2**1023
# What a warning may quote of a resource: its type and id, when they look like a type and an id.
_TYPE = re.compile(r"[A-Za-z]{1,64}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def as_list(value: Any) -> list[Any]:
    """A FHIR array that some senders write as a single object; anything else is empty."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def string(value: Any) -> str | None:
    """A FHIR string (a code, a status, an id): a JSON string, or absent."""
    return value if isinstance(value, str) else None


def codings(concept: Any) -> Iterator[tuple[str, str, str | None]]:
    """(system, code, display) of a CodeableConcept, or of a list of them."""
    for cc in as_list(concept):
        if not isinstance(cc, dict):
            continue
        for coding in as_list(cc.get("coding")):
            if not isinstance(coding, dict):
                continue
            code, system = coding.get("code"), coding.get("system")
            if isinstance(code, str | int) and isinstance(system, str):
                display = coding.get("display")
                system = SYSTEM_ALIASES.get(system, system)
                yield system, str(code).strip(), display if isinstance(display, str) else None


def texts(concept: Any) -> Iterator[str]:
    """Every human text of a CodeableConcept: its text and its codings' displays."""
    for cc in as_list(concept):
        if not isinstance(cc, dict):
            continue
        if isinstance(cc.get("text"), str):
            yield cc["text"]
        for coding in as_list(cc.get("coding")):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]


def status_code(concept: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    for cc in as_list(concept):
        if isinstance(cc, dict):
            for coding in as_list(cc.get("coding")):
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    return str(coding["code"]).lower()
    return None


def status(resource: Resource, default: str = "") -> str:
    """A resource's ``status`` code, lower case; ``default`` when absent or not a string."""
    value = resource.get("status")
    return value.lower() if isinstance(value, str) else default


def parse_date(value: Any) -> date | None:
    """The calendar date of a FHIR date or dateTime; partial dates take their first day.

    A dateTime without a zone is read as written: only its date part matters here.
    """
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None


def first_date(resource: Resource, *paths: str) -> date | None:
    """The first readable date among ``paths`` (``a.b`` reads a nested field)."""
    for path in paths:
        value: Any = resource
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        found = parse_date(value)
        if found is not None:
            return found
    return None


def number(value: Any) -> float | None:
    """A finite number from an int, a float or a decimal string; never a bool, NaN or infinity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > _FLOAT_MAX:  # a JSON parser without a 64-bit limit gives any int
            return None
        found = float(value)
    elif isinstance(value, float):
        found = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value := value.strip()):
        found = float(value)
    else:
        return None
    return found if math.isfinite(found) else None


def referenced_id(reference: Any) -> str | None:
    """The id a literal reference points to: ``Medication/1``, an absolute URL ending so, or
    a version of either (``Medication/1/_history/2`` is still 1); None when there is none."""
    text = string(reference)
    if not text:
        return None
    return text.split("/_history/", 1)[0].rsplit("/", 1)[-1] or None


def reference_of(resource: Resource) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid if isinstance(rid, str) else '?'}"


def loggable(resource: Any) -> str:
    """How a log line may name a resource: its type and id, never a value (an id that is not a
    FHIR id, or a type that is not a name, could carry anything, so it is left out)."""
    if not isinstance(resource, dict):
        return f"a JSON {type(resource).__name__}"
    kind, rid = resource.get("resourceType"), resource.get("id")
    kind = kind if isinstance(kind, str) and _TYPE.fullmatch(kind) else "resource"
    return f"{kind}/{rid}" if isinstance(rid, str) and _ID.fullmatch(rid) else f"{kind} without id"


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|!~])")


def markdown_text(text: str) -> str:
    """EHR text (a display, an answer's text) as literal Markdown: it cannot open a link, an
    image, HTML or emphasis in a card, and stays on one line."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))
