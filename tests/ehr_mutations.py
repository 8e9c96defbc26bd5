"""How a buggy EHR or an attacker breaks a fixture request: the hypothesis strategies of
tests/test_mutations.py, which says what they do and what must hold of every answer."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from ipt_cds.devtools.fixtures import FIXTURES, load_cases

from .conftest import NOW, Json

EXPECTED: dict[str, Json] = json.loads((FIXTURES / "expected.json").read_text())
REQUESTS: dict[str, Json] = {
    p.name.removesuffix(".json"): json.loads(p.read_text())
    for p in sorted((FIXTURES / "requests").glob("*.json"))
}
CASES = {c.name: c for c in load_cases()}
# The server every fixture request names; the tests' fake FHIR server answers for it.
FIXTURE_SERVER = "http://127.0.0.1:8090/fhir"
# The app under test takes Bundles of at most this many entries (20,000 by default): the same
# boundary, at a twentieth of the cost of each example that reaches it.
BUNDLE_LIMIT = 1_000


def case_name(name: str) -> str:
    return name.removesuffix(".no-prefetch")


# --- JSON paths ------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path below the root, parents before their children."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        here = (*prefix, key)
        yield here
        yield from _paths(child, here)


def _at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _show(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "."


def _is_resource(value: Any) -> bool:
    return isinstance(value, dict) and "resourceType" in value


def _is_coding(value: Any) -> bool:
    return isinstance(value, dict) and "code" in value and "resourceType" not in value


_DATE_LIKE = re.compile(r"\d{4}(-\d\d)?")


# --- what a buggy EHR sends --------------------------------------------------------------------

OTHER_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**63 - 1,
    -(2**63),
    "",
    " ",
    "x",
    "-1",
    "NaN",
    "Infinity",
    "1e400",
    "1_5",
    "\u0000",
    "\u0661\u0665",  # Arabic-Indic digits: float() reads them
    [],
    {},
    [None],
    [[]],
    {"": None},
    {"resourceType": "Patient"},
    [{"coding": {"code": 1}}],
]
# Raw JSON text no Python value serialises to: orjson refuses NaN and Infinity, big integers
# overflow, bad UTF-8 is not a str.
RAW: list[bytes] = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e999",
    b"18446744073709551616",
    b"-0",
    b"1E-400",
    b'"\xff\xfe"',
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'"\xc3"',  # a truncated sequence
    b'"\\ud800"',  # a lone surrogate escape
    b'"\\u0000"',
]
HUGE = ["x" * 100_000, "9" * 5_000, "\u00e9" * 300_000, "\\" * 10_000, "[" * 50_000]
DEPTHS = [8, 40, 56, 63, 64, 65, 200, 100_000]
RESOURCE_TYPES: list[Any] = [
    "Patient",
    "Condition",
    "Observation",
    "MedicationRequest",
    "ServiceRequest",
    "Procedure",
    "Medication",
    "OperationOutcome",
    "Bundle",
    "Encounter",
    "patient",
    "",
    7,
    None,
    ["Condition"],
]
DATES = [
    "2026-02-30",
    "2026-13-01",
    "2026-00-10",
    "0000-01-01",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "99999-01-01",
    "2026-11-25T25:61:00Z",
    "-2026-11-25",
    "20261125",
    "2026",
    "2026-1-5",
    "2026-11-25T",
    "T12:00",
    "2030-01-01",
    "1600-01-01",
    "",
]
# The elements the reader looks at, by resource type, to set on a resource in shapes that are
# not theirs (and some that are).
GRAFT_KEYS: dict[str, list[str]] = {
    "Observation": [
        "status",
        "code",
        "component",
        "valueQuantity",
        "valueInteger",
        "valueDecimal",
        "valueString",
        "valueCodeableConcept",
        "effectiveDateTime",
        "effectivePeriod",
        "effectiveInstant",
        "issued",
    ],
    "Condition": [
        "code",
        "clinicalStatus",
        "verificationStatus",
        "severity",
        "recordedDate",
        "onsetDateTime",
        "onsetPeriod",
        "abatementDateTime",
    ],
    "MedicationRequest": [
        "status",
        "medicationCodeableConcept",
        "medicationReference",
        "contained",
        "authoredOn",
    ],
    "ServiceRequest": ["status", "code", "authoredOn"],
    "Procedure": ["status", "code", "performedDateTime", "performedPeriod"],
    "Patient": ["birthDate", "id"],
    "Medication": ["code", "ingredient"],
}
ANY_KEYS = sorted({k for keys in GRAFT_KEYS.values() for k in keys} | {"id", "category"})
# One value of each JSON type: whatever a field should be, most of these are not it.
TYPES: list[Any] = [None, True, 5, 1.5, "x", [], {}, [5], {"x": 5}]
GRAFTS: list[Any] = [
    *OTHER_TYPES,
    {"coding": 5},
    {"coding": {"system": "http://loinc.org", "code": "44261-6"}},
    {"coding": [{"code": "44261-6"}], "text": 7},
    {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": 331}]},
    {"start": 5, "end": ["2026-11-20"]},
    {"start": "2026-02-30"},
    {"value": "Infinity"},
    {"value": "nan"},
    {"value": [15]},
    {"reference": {"reference": "#m"}, "display": 5},
    {"reference": "#"},
    {"reference": "Medication/"},
    [{"code": 5, "valueInteger": "x"}, {"code": {"coding": {"code": "44260-8"}}}],
    [{"itemCodeableConcept": [5]}, 5],
]
# A contained Medication is read only when medicationReference points to it ("#m").
CONTAINED: list[Any] = [
    5,
    "m",
    {"resourceType": "Medication", "id": "m", "ingredient": 5},
    [{"resourceType": "Medication", "id": "m", "ingredient": 5}],
    [{"resourceType": "Medication", "id": "m", "ingredient": {"itemCodeableConcept": 5}}],
    [{"resourceType": "Medication", "id": "m", "code": "x", "ingredient": ["x", None]}],
    [{"resourceType": "Medication", "id": 7}],
]
ENTRIES: list[Any] = [-1, 0, 1, "x", "", {}, True, None, [1, "a", None], [{}], [{"resource": 1}]]
CODING_EDITS: list[tuple[str, Any]] = [
    ("system", None),
    ("system", 7),
    ("system", ""),
    ("system", ["http://loinc.org"]),
    ("code", 443730003),
    ("code", None),
    ("code", ["F33.1"]),
    ("code", " "),
    ("code", True),
    ("code", 1.5),
    ("display", 5),
    ("display", {"text": "x"}),
]

# The kinds of mutation: of the request's shape (most are refused with a 400), and of the data
# inside one FHIR resource (prefetched, drafted or served by the FHIR server), which the
# tolerant reader must read or leave out.
SHAPE_KINDS = [
    "drop",
    "duplicate",
    "retype",
    "wrap",
    "huge",
    "nest",
    "raw",
    "duplicate-key",
    "resource",
    "entry",
    "big-bundle",
]
DATA_KINDS = [
    "graft",
    "graft",
    "graft",
    "graft",
    "retype",
    "retype",
    "coding",
    "coding",
    "date",
    "drop",
    "wrap",
    "huge",
    "resource",
    "duplicate",
]
TARGETS: dict[str, Any] = {
    "resource": lambda v, p: _is_resource(v),
    "graft": lambda v, p: _is_resource(v),
    "date": lambda v, p: isinstance(v, str) and _DATE_LIKE.match(v),
    "coding": lambda v, p: _is_coding(v),
    "entry": lambda v, p: _is_resource(v) and "entry" in v,
    "big-bundle": lambda v, p: p and p[-1] == "entry" and isinstance(v, list),
    "duplicate": lambda v, p: p and isinstance(p[-1], int),
    "duplicate-key": lambda v, p: p and isinstance(p[-1], str),
}
RAW_KINDS = {"nest", "raw", "duplicate-key", "big-bundle"}


@dataclass
class Mutant:
    """A fixture request (or feedback body) and what was done to it."""

    name: str
    doc: Any
    done: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)  # sentinel string -> raw JSON text
    served: list[Json] = field(default_factory=list)  # the FHIR server's data (fetch path)

    def body(self) -> bytes:
        text = orjson.dumps(self.doc)
        # The latest first: its text may hold an earlier sentinel.
        for sentinel, raw in reversed(self.raw.items()):
            text = text.replace(orjson.dumps(sentinel), raw)
        return text

    def __repr__(self) -> str:
        shown = self.body()
        cut = shown[:3000] + (b"..." if len(shown) > 3000 else b"")
        return f"Mutant({self.name}: {'; '.join(self.done)}\n{cut!r})"


def _set(doc: Any, path: Path_, value: Any) -> None:
    _at(doc, path[:-1])[path[-1]] = value


def _raw(m: Mutant, doc: Any, path: Path_, text: bytes) -> None:
    sentinel = f"@raw{len(m.raw)}@"
    m.raw[sentinel] = text
    _set(doc, path, sentinel)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def _mutation(
    draw: st.DrawFn,
    m: Mutant,
    doc: Any,
    kinds: list[str],
    within: Path_ = (),
    where: str = "",
    served: bool = False,
) -> None:
    """One mutation of ``doc`` at or below ``within``, noted in ``m.done``. A served resource
    (``doc`` is the server's list) goes through the fake server as JSON, which finds it by
    its resourceType: no raw text there, and the resource stays an object with a type."""
    kind = draw(st.sampled_from([k for k in kinds if not (served and k in RAW_KINDS)]))
    paths = [within] if within else []
    paths += [(*within, *p) for p in _paths(_at(doc, within))]
    if served:
        paths = [p for p in paths if p != (*within, "resourceType")]
    if within and kind not in ("graft", "resource"):
        paths = [p for p in paths if p != within]  # a mutation inside the resource, not of it
    # The targeted mutations fall back to retyping a random path when there is no target.
    wanted = TARGETS.get(kind)
    targets = [p for p in paths if wanted(_at(doc, p), p)] if wanted else paths
    if not targets:
        kind, targets = "retype", [p for p in paths if p]
    if not targets:
        return
    path = draw(st.sampled_from(targets))
    here = f"{where}{_show(path)}"
    value = _at(doc, path)
    if kind == "drop":
        del _at(doc, path[:-1])[path[-1]]
        m.done.append(f"drop {here}")
    elif kind == "duplicate":
        times = draw(st.sampled_from([1, 2, 30]))
        _at(doc, path[:-1])[path[-1] : path[-1]] = [copy.deepcopy(value) for _ in range(times)]
        m.done.append(f"duplicate {here} x{times}")
    elif kind == "retype":
        new = draw(st.sampled_from(OTHER_TYPES))
        _set(doc, path, copy.deepcopy(new))
        m.done.append(f"{here} = {new!r}")
    elif kind == "wrap":
        if isinstance(value, list):
            _set(doc, path, value[0] if value else {})
            m.done.append(f"unwrap {here}")
        else:
            _set(doc, path, [value])
            m.done.append(f"wrap {here}")
    elif kind == "huge":
        new = draw(st.sampled_from(HUGE))
        _set(doc, path, new)
        m.done.append(f"{here} = {new[:3]!r} x{len(new)}")
    elif kind == "nest":
        depth = draw(st.sampled_from(DEPTHS))
        _raw(m, doc, path, _nested(depth))
        m.done.append(f"{here} = list nested {depth} deep")
    elif kind == "raw":
        text = draw(st.sampled_from(RAW))
        _raw(m, doc, path, text)
        m.done.append(f"{here} = raw {text!r}")
    elif kind == "duplicate-key":
        # The key twice in the object: the first with its value, the second with another.
        key = path[-1]
        new = draw(st.sampled_from(OTHER_TYPES))
        text = orjson.dumps(value) + b"," + orjson.dumps(key) + b":" + orjson.dumps(new)
        _raw(m, doc, path, text)
        m.done.append(f"{here} twice, the second {new!r}")
    elif kind == "resource":
        if draw(st.booleans()):
            new = draw(st.sampled_from(RESOURCE_TYPES))
            value["resourceType"] = copy.deepcopy(new)
            m.done.append(f"{here}.resourceType = {new!r}")
        else:
            other = draw(st.sampled_from(POOL))
            _set(doc, path, copy.deepcopy(other))
            m.done.append(f"{here} = a {other['resourceType']}")
    elif kind == "date":
        new = draw(st.sampled_from(DATES))
        _set(doc, path, new)
        m.done.append(f"{here} = {new!r}")
    elif kind == "coding":
        key, new = draw(st.sampled_from(CODING_EDITS))
        if new is None and draw(st.booleans()):
            value.pop(key, None)
            m.done.append(f"drop {here}.{key}")
        else:
            value[key] = copy.deepcopy(new)
            m.done.append(f"{here}.{key} = {new!r}")
    elif kind == "graft":
        # One to three of the elements the reader looks at, retyped (or reshaped).
        kind_of = value.get("resourceType")
        keys = GRAFT_KEYS.get(kind_of, ANY_KEYS) if isinstance(kind_of, str) else ANY_KEYS
        for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
            if key == "contained":
                value["medicationReference"] = {"reference": "#m"}
                new = draw(st.sampled_from(CONTAINED))
            else:
                new = draw(st.sampled_from(TYPES) | st.sampled_from(GRAFTS))
            value[key] = copy.deepcopy(new)
            m.done.append(f"{here}.{key} = {new!r}")
    elif kind == "entry":
        new = draw(st.sampled_from(ENTRIES))
        value["entry"] = copy.deepcopy(new)
        m.done.append(f"{here}.entry = {new!r}")
    elif kind == "big-bundle":
        # Written as raw text, so that the document stays small for the next mutation.
        size = draw(st.sampled_from([BUNDLE_LIMIT, BUNDLE_LIMIT + 1, 300]))
        entries = [orjson.dumps(e) for e in value] or [b'{"resource":{"resourceType":"Basic"}}']
        _raw(m, doc, path, b"[" + b",".join(entries[i % len(entries)] for i in range(size)) + b"]")
        m.done.append(f"{here} with {size} entries")


def _resources_of(body: Json) -> list[Json]:
    found = []
    for value in (body.get("prefetch") or {}).values():
        if value and value["resourceType"] == "Bundle":
            found += [e["resource"] for e in value["entry"]]
        elif value:
            found.append(value)
    return found


# Resources of every type the fixtures hold, to put where another type belongs.
POOL: list[Json] = [
    *{r["resourceType"]: r for body in REQUESTS.values() for r in _resources_of(body)}.values(),
    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]},
]


@st.composite
def hook_calls(draw: st.DrawFn) -> Mutant:
    """A fixture request with one to six mutations: mostly of the data in its resources (or
    in the FHIR server's), sometimes of the request's shape."""
    name = draw(st.sampled_from(sorted(REQUESTS)))
    m = Mutant(name, copy.deepcopy(REQUESTS[name]))
    if name.endswith(".no-prefetch"):
        m.served = copy.deepcopy(CASES[case_name(name)].resources(NOW))
    for _ in range(draw(st.integers(1, 6))):
        # The record's resources first, then the drafts: hypothesis tries the first more often.
        in_request = sorted(
            (p for p in _paths(m.doc) if _is_resource(v := _at(m.doc, p)) and "entry" not in v),
            key=lambda p: p[0] != "prefetch",
        )
        places = ["data"] * 4 * bool(in_request) + ["served"] * 3 * bool(m.served) + ["shape"]
        place = draw(st.sampled_from(places))
        if place == "shape":
            draw(_mutation(m, m.doc, SHAPE_KINDS))
        elif place == "data":
            draw(_mutation(m, m.doc, DATA_KINDS, within=draw(st.sampled_from(in_request))))
        else:
            i = draw(st.integers(0, len(m.served) - 1))
            draw(_mutation(m, m.served, DATA_KINDS, within=(i,), where="served", served=True))
    return m


FEEDBACK: list[Json] = [
    {
        "feedback": [
            {
                "card": "9d5e6d1e-1f3a-4a57-9c6e-8d6b9a1c2f3e",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                "outcomeTimestamp": "2026-11-25T12:02:00Z",
            }
        ]
    },
    {
        "feedback": [
            {
                "card": "9d5e6d1e-1f3a-4a57-9c6e-8d6b9a1c2f3e",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "code": "not-indicated",
                        "system": "https://fhir.ipt-cds.org/CodeSystem/override-reason",
                        "display": "Not indicated",
                    },
                    "userComment": "seen by the team",
                },
                "outcomeTimestamp": "2026-11-25T12:01:00+01:00",
            },
            {
                "card": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "outcome": "overridden",
                "overrideReasons": [
                    {"reason": {"code": "patient-declined"}},
                    {"code": "other", "system": "urn:epic", "userSelected": True},
                ],
                "outcomeTimestamp": "2026-11-25T12:01:00",
            },
        ]
    },
]


@st.composite
def feedback_bodies(draw: st.DrawFn) -> Mutant:
    i = draw(st.sampled_from(range(len(FEEDBACK))))
    m = Mutant(f"feedback-{i}", copy.deepcopy(FEEDBACK[i]))
    for _ in range(draw(st.integers(1, 3))):
        draw(_mutation(m, m.doc, SHAPE_KINDS + DATA_KINDS))
    return m
