"""cards/valuesets/traps.yaml against the shipped value sets: what each must hold, must never
hold, and how they stand to each other, membership decided by the service's own terminology
(code families included), and the vendored sources where an entry names one."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ipt_cds.clinical.terminology import Terminology, normal_code
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.datafiles import read_yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "cards" / "valuesets"
SOURCES = FOLDER / "sources"
TRAPS: dict[str, Any] = read_yaml(FOLDER / "traps.yaml")
BASE = "https://fhir.ipt-cds.org/ValueSet/"
SYSTEMS: dict[str, str] = TRAPS["systems"]
ICD = SYSTEMS["icd"]
Key = tuple[str, str]


def key(text: str) -> Key:
    alias, code = text.split("|", 1)
    return SYSTEMS[alias], code


@cache
def value_set(vs_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FOLDER / f"{vs_id}.json").read_text())
    return data


def listed(vs_id: str) -> set[Key]:
    """The codes the value set enumerates (not those of its code families)."""
    return {(c["system"], c["code"]) for c in contains(vs_id)}


def contains(vs_id: str) -> list[dict[str, Any]]:
    """The expansion: the codes its definition (``compose``) takes in, with their displays."""
    found: list[dict[str, Any]] = value_set(vs_id)["expansion"]["contains"]
    return found


def has_family(vs_id: str) -> bool:
    """A code family: a code system with code regexes, matched by the service at run time."""
    return any(
        "valueSet" not in inc
        and any(f["property"] == "code" and f["op"] == "regex" for f in inc.get("filter", []))
        for inc in value_set(vs_id)["compose"]["include"]
    )


@cache
def icd_list() -> dict[str, tuple[str, str]]:
    """Every ICD-10-CM code of the sources, with its group in icd10cm_codes_by_group.csv ("" if
    none) and its description: the csv's (April 2026), else a VSAC expansion's. Block titles
    such as F20-F29 are not codes."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted((SOURCES / "vsac").glob("*.json")):
        for c in json.loads(path.read_text()).get("expansion", {}).get("contains", []):
            if c.get("system") == ICD:
                found[c["code"]] = ("", c.get("display", ""))
    with (SOURCES / "icd10cm_codes_by_group.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if "-" not in row["code"]:
                found[row["code"]] = (row["group"], row["description_ICD10CM_Apr2026"])
    return found


@cache
def recommended() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SOURCES / "codes_recommended.json").read_text())
    return data


def recommended_entries(path: str) -> list[Any]:
    """The entries codes_recommended.json lists at a dotted path (lists within it flattened)."""
    node: Any = recommended()
    for part in path.split("."):
        node = node[part]
    return list(_entries(node))


def _entries(node: Any) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _entries(item) if isinstance(item, list) else [item]
    elif isinstance(node, dict) and "code" not in node:
        for value in node.values():
            if isinstance(value, list | dict):
                yield from _entries(value)
    else:
        yield node


class Sets:
    """Membership through the service's terminology: a code family counts as the service
    matches it."""

    def __init__(self, terms: Terminology) -> None:
        self.terms = terms

    def holds(self, vs_id: str, k: Key) -> bool:
        return self.terms.contains(BASE + vs_id, *k)

    def candidates(self, vs_ids: Iterable[str]) -> set[Key]:
        """Every code any of them could hold: their own, and with a code family every
        ICD-10-CM code of the list."""
        ids = list(vs_ids)
        found = set().union(*(listed(i) for i in ids))
        if any(has_family(i) for i in ids):
            found |= {(ICD, code) for code in icd_list()}
        return found


@pytest.fixture(scope="module")
def sets(knowledge: Knowledge) -> Sets:
    return Sets(knowledge.terms)


SECTIONS = (
    "holds",
    "never",
    "exactly",
    "disjoint",
    "within",
    "families",
    "family_cases",
    "icd_groups",
    "recommended",
    "recommended_excepted",
    "recommended_moved",
    "recommended_categories",
    "recommended_never",
    "drugs",
)


def test_every_section_of_the_traps_is_there() -> None:
    """A misspelt or missing section would leave its tests with no cases: skipped, not failed."""
    assert sorted(k for k in TRAPS if k != "systems") == sorted(SECTIONS)
    assert all(TRAPS[section] for section in SECTIONS)


def _ids(section: str) -> list[Any]:
    return list(TRAPS.get(section) or [])


@pytest.mark.parametrize("entry", _ids("holds"), ids=lambda e: e["set"])
def test_each_value_set_holds_what_it_must(sets: Sets, entry: dict[str, Any]) -> None:
    missing = [c for c in entry["codes"] if not sets.holds(entry["set"], key(c))]
    assert missing == [], entry["why"]


@pytest.mark.parametrize("entry", _ids("never"), ids=lambda e: e["set"])
def test_no_value_set_holds_what_it_must_not(sets: Sets, entry: dict[str, Any]) -> None:
    held = [c for c in entry["codes"] if sets.holds(entry["set"], key(c))]
    assert held == [], entry["why"]


@pytest.mark.parametrize("entry", _ids("exactly"), ids=lambda e: e["set"])
def test_some_value_sets_hold_exactly_their_codes(sets: Sets, entry: dict[str, Any]) -> None:
    vs_id, want = entry["set"], {key(c) for c in entry["codes"]}
    held = {k for k in sets.candidates([vs_id]) if sets.holds(vs_id, k)}
    assert held == want, entry["why"]


@pytest.mark.parametrize("entry", _ids("disjoint"), ids=lambda e: "+".join(e["sets"]))
def test_value_sets_that_never_share_a_code(sets: Sets, entry: dict[str, Any]) -> None:
    ids: list[str] = entry["sets"]
    both = [
        (a, b, k[1])
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
        for k in sorted(sets.candidates([a, b]))
        if sets.holds(a, k) and sets.holds(b, k)
    ]
    assert both == [], entry["why"]


@pytest.mark.parametrize("entry", _ids("within"), ids=lambda e: e["set"])
def test_value_sets_within_others(sets: Sets, entry: dict[str, Any]) -> None:
    vs_id = entry["set"]
    outside = sorted(
        k[1]
        for k in sets.candidates([vs_id])
        if sets.holds(vs_id, k) and not any(sets.holds(o, k) for o in entry["within"])
    )
    assert outside == [], entry["why"]


@pytest.mark.parametrize("entry", _ids("families"), ids=lambda e: f"{e['set']}-{e['codes']}")
def test_a_code_family_holds_the_codes_its_description_names(
    sets: Sets, entry: dict[str, Any]
) -> None:
    start, says = re.compile(entry["codes"]), re.compile(entry["held_when"], re.IGNORECASE)
    tried, wrong = 0, []
    for code, (_group, description) in icd_list().items():
        if start.match(normal_code(ICD, code)):
            tried += 1
            if sets.holds(entry["set"], (ICD, code)) != bool(says.search(description)):
                wrong.append(f"{code} {description}")
    assert tried, "the pattern meets codes of the list"
    assert wrong == [], entry["why"]


@pytest.mark.parametrize("vs_id", sorted({e["set"] for e in _ids("families")}))
def test_a_code_family_takes_in_no_code_outside_its_ranges(sets: Sets, vs_id: str) -> None:
    ranges = [re.compile(e["codes"]) for e in _ids("families") if e["set"] == vs_id]
    own = {code for _system, code in listed(vs_id)}
    stray = [
        code
        for code in icd_list()
        if not any(r.match(normal_code(ICD, code)) for r in ranges)
        and code not in own
        and sets.holds(vs_id, (ICD, code))
    ]
    assert stray == []


@pytest.mark.parametrize("entry", _ids("family_cases"), ids=lambda e: e["set"])
def test_a_code_family_on_hand_picked_codes(sets: Sets, entry: dict[str, Any]) -> None:
    assert [c for c in entry["holds"] if not sets.holds(entry["set"], (ICD, c))] == []
    assert [c for c in entry["never"] if sets.holds(entry["set"], (ICD, c))] == [], entry["why"]


@pytest.mark.parametrize("vs_id", sorted(TRAPS["icd_groups"]))
def test_a_value_set_holds_its_icd_10_cm_groups_whole(sets: Sets, vs_id: str) -> None:
    groups = set(TRAPS["icd_groups"][vs_id])
    in_groups = [code for code, (group, _) in icd_list().items() if group in groups]
    assert len(in_groups) >= len(groups), "every group is in the list"
    assert [c for c in in_groups if not sets.holds(vs_id, (ICD, c))] == []


def _excepted() -> dict[tuple[str, str], str]:
    return {(e["path"], e["code"]): e["why"] for e in _ids("recommended_excepted")}


def _moved() -> dict[tuple[str, str], str]:
    return {(e["path"], code): e["to"] for e in _ids("recommended_moved") for code in e["codes"]}


@pytest.mark.parametrize("entry", _ids("recommended"), ids=lambda e: e["path"])
def test_every_verified_code_is_where_it_belongs(sets: Sets, entry: dict[str, Any]) -> None:
    path, excepted, moved = entry["path"], _excepted(), _moved()
    entries = recommended_entries(path)
    assert entries, f"codes_recommended.json: {path} is empty"
    wrong = []
    for item in entries:
        k = (item["system"], item["code"])
        there = [sets.holds(vs_id, k) for vs_id in entry["sets"]]
        if (path, item["code"]) in moved:
            if not sets.holds(moved[(path, item["code"])], k) or any(there):
                wrong.append(f"{item['code']}: belongs in {moved[(path, item['code'])]} only")
        elif (path, item["code"]) in excepted:
            if any(there):
                wrong.append(f"{item['code']}: held, though excepted")
        elif not (any(there) if entry.get("any") else all(there)):
            wrong.append(f"{item['code']}: missing")
    assert wrong == []


def test_every_exception_and_move_names_a_listed_code() -> None:
    for path, code in [*_excepted(), *_moved()]:
        assert code in {e["code"] for e in recommended_entries(path)}, (path, code)


@pytest.mark.parametrize("entry", _ids("recommended_categories"), ids=lambda e: e["path"])
def test_a_value_set_holds_the_categories_listed(sets: Sets, entry: dict[str, Any]) -> None:
    prefixes = recommended_entries(entry["path"])
    assert prefixes
    assert [p for p in prefixes if not sets.holds(entry["set"], (ICD, p))] == []


@pytest.mark.parametrize("entry", _ids("recommended_never"), ids=lambda e: e["path"])
def test_a_value_set_holds_none_of_a_list(sets: Sets, entry: dict[str, Any]) -> None:
    items = recommended_entries(entry["path"])
    assert items
    held = [
        item["code"]
        for item in items
        if sets.holds(entry["set"], (item.get("system", ICD), item["code"]))
    ]
    assert held == [], entry["why"]


def _drug_rows() -> dict[str, dict[str, str]]:
    path = SOURCES / "antidepressant_rxnorm_scd_from_vsac.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return {row["rxnorm_code"]: row for row in csv.DictReader(f)}


def test_the_antidepressant_drugs_are_the_list_less_what_is_no_antidepressant(sets: Sets) -> None:
    drugs = TRAPS["drugs"]
    rule = drugs["not_antidepressants"]
    rxnorm = SYSTEMS["rxnorm"]
    never = {k[1] for e in _ids("never") if e["set"] == drugs["set"] for k in map(key, e["codes"])}
    wrong = []
    for code, row in _drug_rows().items():
        ingredients = set(row["ingredients"].split(";"))
        excluded = (
            bool(ingredients & set(rule["ingredients"]))
            or row["note"].startswith(rule["note_starts"])
            or code in never
        )
        if sets.holds(drugs["set"], (rxnorm, code)) == excluded:
            wrong.append(f"{code} {row['note'] or row['ingredients']}")
    assert wrong == [], rule["why"]


def test_the_antidepressant_ingredients_are_those_of_the_drugs(sets: Sets) -> None:
    drugs = TRAPS["drugs"]
    names = {c["display"] for c in contains(drugs["ingredients_set"])}
    assert all(name == name.lower() for name in names)
    assert not names & set(drugs["ingredients_never"])
    rows = _drug_rows()
    held = [c for _s, c in listed(drugs["set"])]
    used = {i for code in held for i in rows[code]["ingredients"].split(";")}
    used -= {*drugs["combination_partners"], "selegiline"}
    assert sorted(used - names) == []


@pytest.mark.parametrize("vs_id", sorted(TRAPS["drugs"]["of_ingredient"]))
def test_an_ingredient_value_set_holds_it_and_all_its_drugs(vs_id: str) -> None:
    _system, ingredient = key(TRAPS["drugs"]["of_ingredient"][vs_id])
    display = next(c["display"] for c in contains(vs_id) if c["code"] == ingredient)
    rows = _drug_rows()
    want = {c for c, row in rows.items() if display in row["ingredients"].split(";")}
    assert {c for _s, c in listed(vs_id)} == want | {ingredient}
    for c in contains(vs_id):
        if c["code"] in rows:
            assert c["display"] == rows[c["code"]]["display (VSAC, RxNorm 2024-01)"]


def test_phq_answers_score_as_their_value_sets_say(knowledge: Knowledge) -> None:
    scores = knowledge.terms.ordinals(BASE + "phq-answers")
    one, more = listed("phq-answer-1"), listed("phq-answer-2-or-more")
    assert scores
    for code, score in scores.items():
        k = (SYSTEMS["loinc"], code)
        assert (k in one, k in more) == (score == 1, score is not None and score >= 2), code
