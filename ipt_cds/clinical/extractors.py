"""The generic fact extractors that ``cards/facts.yaml`` declares simple facts with.

Each extractor finds the resources of the record that a value set (and sometimes a window)
selects, and answers them as ``Evidence``: the reference, the matching code, the date, and for
observations the value. The clinical meaning lives in the YAML and the value sets; this module
only knows how FHIR resources carry codes, statuses and dates.

Every field is read through ipt_cds/clinical/reader.py, which reads a field of the wrong JSON
type as absent. Should reading a resource fail all the same, the resource is skipped
(``Scope.skip``: one warning naming its type and id) and the facts are computed without it;
the call goes on. The guards are plain ``try`` blocks around each resource's reading, which
cost nothing until something raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from ipt_cds.clinical.declarations import (
    ActiveCondition,
    ConditionWithin,
    CurrentMedication,
    CurrentOrder,
    Declaration,
    DraftOrders,
    LatestObservation,
    RecentProcedure,
)
from ipt_cds.clinical.medications import (
    CURRENT_STATUSES,
    Drug,
    DrugMatcher,
    daily_mg,
)
from ipt_cds.clinical.reader import (
    as_list,
    codings,
    first_date,
    loggable,
    markdown_text,
    number,
    reference_of,
    referenced_id,
    status,
    status_code,
    string,
    texts,
)
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.terminology import Match, Terminology
from ipt_cds.protocol.models import Resource

log = logging.getLogger("ipt_cds")


@dataclass(frozen=True)
class Evidence:
    ref: str
    code: str | None = None
    display: str | None = None
    on: date | None = None
    value: float | None = None
    answer: str | None = None
    answer_codes: tuple[tuple[str, str], ...] = ()
    selected: bool = False
    ingredient: str | None = None
    # A drug's daily dose in mg, when its first dosage says it (renewal or new start).
    dose: float | None = None

    def describe(self) -> str:
        """The evidence in a card's words; EHR text in it is escaped for Markdown."""
        when = f", recorded {self.on.isoformat()}" if self.on else ""
        return f"{self.name()}{when}"

    def name(self) -> str:
        """What it is, with its code, without the date: "Puerperal psychosis (F53.1)"."""
        name = markdown_text(self.display or self.code or self.ref)
        code = f" ({markdown_text(self.code)})" if self.code and self.display else ""
        return f"{name}{code}"


Coded = tuple[Resource, Match, Resource]


@dataclass(frozen=True)
class Scope:
    """What an extractor reads: the record, the value sets, the date, the parameters.

    ``coded`` indexes the record once per call by value set, so each of the many extractors
    reads only the resources coded in its value set instead of scanning the whole record.
    """

    record: PatientRecord
    terms: Terminology
    today: date
    params: dict[str, Any]
    _index: dict[str, dict[str, list[Coded]]] = field(default_factory=dict)
    # The resources that could not be read in this evaluation, by id(); FactBook.evaluate then
    # computes the facts again from the record without them.
    skipped: dict[int, Resource] = field(default_factory=dict)
    # Observations a panel of the record names in ``hasMember``, by id(), with the panel: its
    # date stands for a member's without one. Empty until first asked (most calls never ask).
    _panels: list[dict[int, Resource]] = field(default_factory=list)

    def since(self, days_param: str) -> date:
        return self.today - timedelta(days=int(self.params[days_param]))

    def skip(self, resource: Resource, error: Exception) -> None:
        """Leave out a resource whose reading raised, with one warning: its type and id and the
        exception's type (its text may quote the record)."""
        if id(resource) not in self.skipped:
            self.skipped[id(resource)] = resource
            log.warning(
                "%s skipped: it cannot be read (%s)", loggable(resource), type(error).__name__
            )

    def panel_of(self, member: Resource) -> Resource | None:
        """The Observation of the record whose ``hasMember`` names this one, if any."""
        if not self._panels:
            self._panels.append(_panel_index(self.record.of_type("Observation")))
        return self._panels[0].get(id(member))

    def coded(self, kind: str, url: str) -> list[Coded]:
        """(resource, matching coding, the element holding it) for every resource of ``kind``
        coded in the value set; an Observation's components, and the Observations it contains
        and names in ``hasMember``, count as its codes too."""
        by_url = self._index.get(kind)
        if by_url is None:
            by_url = self._index[kind] = {}
            for resource in self.record.of_type(kind):
                try:
                    items = (
                        _observation_items(resource)
                        if kind == "Observation"
                        else [(resource.get("code"), resource)]
                    )
                    for concept, holder in items:
                        for vs, match in self.terms.memberships(concept).items():
                            by_url.setdefault(vs, []).append((resource, match, holder))
                except Exception as exc:
                    self.skip(resource, exc)
        return by_url.get(url, [])


Extractor = Callable[[Scope], list[Evidence]]
Params = dict[str, Any]


# --- condition helpers ---------------------------------------------------------------------

_ACTIVE = {"active", "recurrence", "relapse"}
_NOT_TRUE = {"refuted", "entered-in-error"}


def condition_is_active(c: Resource) -> bool:
    """the clinical spec: active, recurrence or relapse; or no status and no abatement."""
    if status_code(c.get("verificationStatus")) in _NOT_TRUE:
        return False
    clinical = status_code(c.get("clinicalStatus"))
    if clinical is None:
        return not any(k.startswith("abatement") for k in c)
    return clinical in _ACTIVE


def condition_is_true(c: Resource) -> bool:
    return status_code(c.get("verificationStatus")) not in _NOT_TRUE


def condition_dates(c: Resource) -> list[date]:
    found = [first_date(c, "recordedDate"), first_date(c, "onsetDateTime", "onsetPeriod.start")]
    return [d for d in found if d is not None]


def condition_evidence(c: Resource, match: Match) -> Evidence:
    dates = condition_dates(c)
    return Evidence(reference_of(c), match.code, match.display, dates[0] if dates else None)


# --- extractors ----------------------------------------------------------------------------


def _active_condition(d: ActiveCondition) -> Extractor:
    def run(s: Scope) -> list[Evidence]:
        out = []
        for c, match, _ in s.coded("Condition", d.valueset):
            try:
                if condition_is_active(c):
                    out.append(condition_evidence(c, match))
            except Exception as exc:
                s.skip(c, exc)
        return out

    return run


def _condition_within(d: ConditionWithin) -> Extractor:
    def run(s: Scope) -> list[Evidence]:
        since, out = s.since(d.days), []
        for c, match, _ in s.coded("Condition", d.valueset):
            try:
                if not condition_is_true(c):
                    continue
                ev = condition_evidence(c, match)
                recent = any(since <= day <= s.today for day in condition_dates(c))
                active = condition_is_active(c)
            except Exception as exc:
                s.skip(c, exc)
                continue
            keep = {
                "active": active and recent,
                "active-or-within": active or recent,
                "any": recent,
            }[d.status]
            if keep:
                out.append(ev)
        return out

    return run


def _observation_items(o: Resource) -> list[tuple[Any, Resource]]:
    """The observation itself, its components and the observations it contains as members,
    each as (code, holder of the value)."""
    items: list[tuple[Any, Resource]] = [(o.get("code"), o)]
    components, members = o.get("component"), o.get("hasMember")
    if components is None and members is None:  # most observations: no call to make
        return items
    # An array, or one component object for it; anything else holds no component.
    for comp in as_list(components):
        if isinstance(comp, dict):
            items.append((comp.get("code"), comp))
    if members is not None:
        contained = {
            r.get("id"): r
            for r in as_list(o.get("contained"))
            if isinstance(r, dict) and r.get("resourceType") == "Observation"
        }
        for ref in as_list(members):
            local = _member_id(ref) if contained else None
            member = contained.get(local[1:]) if local and local.startswith("#") else None
            if member is not None:
                items.append((member.get("code"), member))
    return items


def _member_id(ref: Any) -> str | None:
    """The id a ``hasMember`` Reference names (``#id`` for a contained resource)."""
    text = string(ref.get("reference")) if isinstance(ref, dict) else None
    if text is not None and text.startswith("#"):
        return text
    return referenced_id(text)


def _panel_index(observations: list[Resource]) -> dict[int, Resource]:
    """id() of each Observation a panel of the record names in ``hasMember`` -> the panel."""
    panels: dict[int, Resource] = {}
    if not any("hasMember" in o for o in observations):  # most records hold no panel
        return panels
    by_id = {o.get("id"): o for o in observations if isinstance(o.get("id"), str)}
    for o in observations:
        for ref in as_list(o.get("hasMember")):  # total over JSON: nothing here raises
            target = by_id.get(_member_id(ref))
            if target is not None and target is not o:
                panels.setdefault(id(target), o)
    return panels


def _value(
    holder: Resource, answer_scores: dict[str, int]
) -> tuple[float | None, str | None, tuple[tuple[str, str], ...]]:
    q = holder.get("valueQuantity")
    if isinstance(q, dict):
        return number(q.get("value")), None, ()
    for key in ("valueInteger", "valueDecimal", "valueString"):
        if key in holder:
            return number(holder[key]), None, ()
    concept = holder.get("valueCodeableConcept")
    if concept is not None:
        found = [(system, code) for system, code, _ in codings(concept)]
        score = next((answer_scores[c] for _, c in found if c in answer_scores), None)
        answer = next(texts(concept), None)
        return (float(score) if score is not None else None), answer, tuple(found)
    return None, None, ()


_VOID = ("entered-in-error", "cancelled")
_WHEN = ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued")
# Where a reading sits, for ``same_day: separate``: an Observation's own value, a panel's part
# (a component or a contained member), the sum of a panel's items.
_OWN, _PART, _SUM = 2, 1, 0


def answer_scores(terms: Terminology, url: str | None) -> dict[str, int]:
    """The score of each answer code of the value set: its concept's ordinalValue (start-up
    checks each is a whole number)."""
    scores = terms.ordinals(url) if url is not None else {}
    return {code: int(score) for code, score in scores.items() if score is not None}


def _latest_observation(d: LatestObservation, terms: Terminology) -> Extractor:
    scores = answer_scores(terms, d.answers)

    def rank(place: int, value: float | None) -> tuple[float, float]:
        score = -1.0 if value is None else value
        return (place, score) if d.same_day == "separate" else (score, place)

    def run(s: Scope) -> list[Evidence]:
        since = s.since(d.days)
        ceiling = float(s.params[d.max]) if d.max else float("inf")
        best: tuple[tuple[date, float, float], Evidence] | None = None
        # Every reading counts, several of one panel too (item 9 as a component and as a
        # member): the order above decides between them, the first of equals standing.
        for o, match, holder in s.coded("Observation", d.valueset):
            try:
                if status(o, "final") in _VOID:
                    continue
                on = first_date(o, *_WHEN)
                if on is None and (panel := s.panel_of(o)) is not None:
                    on = first_date(panel, *_WHEN)
                if on is None or not since <= on <= s.today:
                    continue
                value, answer, answer_codes = _value(holder, scores)
            except Exception as exc:
                s.skip(o, exc)
                continue
            if value is not None and not 0 <= value <= ceiling:
                continue
            if value is None and not answer_codes:
                continue
            key = (on, *rank(_OWN if holder is o else _PART, value))
            if best is None or key > best[0]:
                ev = Evidence(
                    reference_of(o), match.code, match.display, on, value, answer, answer_codes
                )
                best = (key, ev)
        if d.sum_of is not None:
            for ev in _sums(s, d.sum_of, since, scores):
                if ev.value is not None and ev.value <= ceiling and ev.on is not None:
                    key = (ev.on, *rank(_SUM, ev.value))
                    if best is None or key > best[0]:
                        best = (key, ev)
        return [best[1]] if best else []

    return run


def _sums(s: Scope, url: str, since: date, scores: dict[str, int]) -> list[Evidence]:
    """Each panel in the window that answers every item of the value set (as components,
    contained or ``hasMember`` observations), as the sum of its answers."""
    items = len(s.terms.ordinals(url))
    top = max(scores.values(), default=0)
    panels: dict[int, tuple[Resource, dict[str, float]]] = {}
    for o, match, holder in s.coded("Observation", url):
        panel = o if holder is not o else s.panel_of(o)
        if panel is None:  # an item on its own, in no panel: nothing says what it adds up with
            continue
        try:
            if status(o, "final") in _VOID or status(panel, "final") in _VOID:
                continue
            value = _value(holder, scores)[0]
        except Exception as exc:
            s.skip(o, exc)
            continue
        if value is None or not 0 <= value <= top:
            continue
        answers = panels.setdefault(id(panel), (panel, {}))[1]
        # One item answered twice in a panel: the higher answer, as for two same-day answers.
        answers[match.code] = max(value, answers.get(match.code, value))
    out = []
    title = s.terms.titles.get(url, "item")
    for panel, answers in panels.values():
        if len(answers) < items:
            continue
        try:
            on = first_date(panel, *_WHEN)
        except Exception as exc:
            s.skip(panel, exc)
            continue
        if on is not None and since <= on <= s.today:
            total = sum(answers.values())
            words = f"sum of the {items} {title} answers"
            out.append(Evidence(reference_of(panel), None, words, on, total))
    return out


def _current_medication(d: CurrentMedication, terms: Terminology, params: Params) -> Extractor:
    drugs = DrugMatcher(terms, d.valueset, d.ingredients, d.not_when, params)

    def run(s: Scope) -> list[Evidence]:
        out = []
        for kind, current in CURRENT_STATUSES.items():
            for m in s.record.of_type(kind):
                if status(m) not in current:
                    continue
                try:
                    found = drugs.match(m, s.record)
                    if found:
                        on = first_date(m, "authoredOn", "dateAsserted", "effectiveDateTime")
                        ev = Evidence(reference_of(m), found.code, found.display, on)
                        out.append(replace(ev, ingredient=found.ingredient, dose=daily_mg(m)))
                except Exception as exc:
                    s.skip(m, exc)
        return out

    return run


def _current_order(d: CurrentOrder) -> Extractor:
    statuses = set(d.statuses)

    def run(s: Scope) -> list[Evidence]:
        since, out = (s.since(d.days) if d.days else None), []
        for r, match, _ in s.coded("ServiceRequest", d.valueset):
            if status(r) in statuses:
                try:
                    on = first_date(r, "authoredOn")
                except Exception as exc:
                    s.skip(r, exc)
                    continue
                if since is not None and (on is None or not since <= on <= s.today):
                    continue
                out.append(Evidence(reference_of(r), match.code, match.display, on))
        return out

    return run


def _recent_procedure(d: RecentProcedure) -> Extractor:
    def run(s: Scope) -> list[Evidence]:
        since, out = s.since(d.days), []
        for p, match, _ in s.coded("Procedure", d.valueset):
            state = status(p)
            if state not in ("completed", "in-progress"):
                continue
            try:
                on = first_date(
                    p, "performedPeriod.end", "performedDateTime", "performedPeriod.start"
                )
            except Exception as exc:
                s.skip(p, exc)
                continue
            undated_ongoing = on is None and state == "in-progress"
            if undated_ongoing or (on is not None and since <= on <= s.today):
                out.append(Evidence(reference_of(p), match.code, match.display, on))
        return out

    return run


def _draft_orders(d: DraftOrders, terms: Terminology, params: Params) -> Extractor:
    drugs = (
        DrugMatcher(terms, d.valueset, d.ingredients, d.not_when, params) if d.ingredients else None
    )
    includes = [t.lower() for t in d.text_includes]
    excludes = [t.lower() for t in d.text_excludes]

    def by_text(r: Resource) -> str | None:
        if d.unless_coded and terms.match(d.unless_coded, r.get("code")):
            return None  # coded as something we know, and not this: the code wins
        for text in texts(r.get("code")):
            low = text.lower()
            if any(x in low for x in excludes):
                return None
            if any(x in low for x in includes):
                return text
        return None

    def run(s: Scope) -> list[Evidence]:
        selected = {id(r) for r in s.record.selected}
        out = []
        for r in s.record.drafts:
            if r.get("resourceType") != d.resource:
                continue
            found: Drug | None
            try:
                if drugs is not None:
                    found = drugs.match(r, s.record)
                else:
                    match = terms.match(d.valueset, r.get("code"))
                    said = None if match else by_text(r)
                    found = (
                        Drug(match.code, match.display, None)
                        if match
                        else (Drug(None, said, None) if said else None)
                    )
                on = first_date(r, "authoredOn") if found else None
                dose = daily_mg(r) if found and drugs is not None else None
            except Exception as exc:
                s.skip(r, exc)
                continue
            if found:
                ev = Evidence(reference_of(r), found.code, found.display, on)
                ev = replace(ev, selected=id(r) in selected, ingredient=found.ingredient, dose=dose)
                out.append(ev)
        return out

    return run


def build(decl: Declaration, terms: Terminology, params: Params) -> Extractor:
    match decl:
        case ActiveCondition():
            return _active_condition(decl)
        case ConditionWithin():
            return _condition_within(decl)
        case LatestObservation():
            return _latest_observation(decl, terms)
        case CurrentMedication():
            return _current_medication(decl, terms, params)
        case CurrentOrder():
            return _current_order(decl)
        case RecentProcedure():
            return _recent_procedure(decl)
        case DraftOrders():
            return _draft_orders(decl, terms, params)
    raise AssertionError(decl)  # pragma: no cover
