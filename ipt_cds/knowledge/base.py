"""Load and validate the knowledge base in ``cards/`` once, at start-up.

    services.yaml      the CDS Services offered (discovery)
    parameters.yaml    named thresholds and windows
    valuesets/*.json   one FHIR ValueSet per concept, referred to by canonical URL
    facts.yaml         simple facts over generic extractors; the computed facts, what their
                       Python reads (value sets, extractions, parameters, facts) and means
    derived.yaml       facts derived from those: expressions, sentences, the verdict's cases
    links.yaml         links cards may show (crisis line, risk assessment, safety plan)
    orders.yaml        the orders a card's suggestion can make (ServiceRequest templates)
    rules/             one file per rule; _index.yaml gives their order and families

Anything wrong stops the service with the file's name: a CDS service that starts with half its
knowledge would give advice that looks complete and is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical import extractors
from ipt_cds.clinical.declarations import Declaration
from ipt_cds.clinical.fact_model import SEVERITIES, FactSpec
from ipt_cds.clinical.fact_sources import FactSources
from ipt_cds.clinical.facts import FactBook
from ipt_cds.clinical.terminology import Terminology
from ipt_cds.clinical.worsening import Worsening
from ipt_cds.knowledge.computed import ComputedGroup, load_computed
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.derived import DerivedFacts, load_derived
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.orders import Orders
from ipt_cds.knowledge.rules import RuleBook
from ipt_cds.knowledge.site import DEFAULT_SITE, LinkKey, Orderable, SiteProfile, load_site
from ipt_cds.knowledge.valuesets import load_terminology
from ipt_cds.knowledge.worsening import load_worsening
from ipt_cds.protocol.models import (
    PREFETCH_TOKEN,
    PREFETCH_USER_TOKENS,
    REQUEST_MODELS,
    Link,
    Service,
)


class _LinksFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    links: dict[str, Link]


class _ServicesFile(BaseModel):
    services: list[Service]
    prefetch: dict[str, str] | None = None


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phq9_bands: dict[str, int]
    phq9_max: int = Field(gt=0)
    combination_severities: list[str]
    item_score_counts: int = Field(ge=1, le=3)
    neurovegetative_min_domains: int = Field(ge=1)
    recurrence_phq9: int = Field(ge=0)
    phq9_window_days: int = Field(gt=0)
    new_diagnosis_window_days: int = Field(gt=0)
    pregnancy_window_days: int = Field(gt=0)
    postpartum_window_days: int = Field(gt=0)
    bereavement_window_days: int = Field(gt=0)
    psychotherapy_procedure_window_days: int = Field(gt=0)
    suicidal_ideation_dx_days: int = Field(gt=0)
    risk_assessed_hold_hours: int = Field(gt=0, le=24)
    psychotic_features_window_days: int = Field(gt=0)
    symptom_condition_window_days: int = Field(gt=0)
    psychiatric_care_window_days: int = Field(gt=0)
    boxed_warning_age: int = Field(gt=0)
    adult_age: int = Field(gt=0)
    older_adult_age: int = Field(gt=0)
    bereavement_min_age: int = Field(gt=0)
    partial_response_age: int = Field(gt=0)
    adolescent_min_age: int = Field(gt=0)
    adolescent_max_age: int = Field(gt=0)
    amitriptyline_low_dose_max_mg: float = Field(gt=0)
    trazodone_sleep_dose_max_mg: float = Field(gt=0)


class _FactsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valuesets: dict[str, str]
    facts: dict[str, Declaration]
    computed: dict[str, ComputedGroup]
    same_draft: list[str] = []


# Compared and hashed by identity: a knowledge base loaded is one configuration, and what is
# built from it alone is cached by it (the evidence pages, ipt_cds/http/evidence.py).
@dataclass(frozen=True, eq=False)
class Knowledge:
    services: dict[str, Service]
    params: dict[str, Any]
    terms: Terminology
    factbook: FactBook
    rulebook: RuleBook
    # Every fact a rule may name: those read from the record, then the derived ones.
    facts: Mapping[str, FactSpec]
    derived: DerivedFacts
    # What each computed fact reads, as facts.yaml declares it (the glossary, evidence pages).
    sources: FactSources
    # Which facts tell the card memory that a record is worse (worsening.yaml).
    worsening: Worsening
    site: SiteProfile = DEFAULT_SITE
    # Facts whose references key "the same draft" for once per visit (facts.yaml same_draft).
    same_draft: tuple[str, ...] = ()

    @classmethod
    def load(cls, root: Path, site_file: Path | None = None) -> Knowledge:
        services = _load_services(root / "services.yaml")
        params = _load_parameters(root / "parameters.yaml")
        terms = load_terminology(root / "valuesets")
        path = root / "facts.yaml"
        spec = parse(path, _FactsFile)
        simple = _declared_facts(path, spec)
        computed = load_computed(
            path, spec.computed, simple, spec.valuesets, spec.facts, params, terms
        )
        built = _load_facts(path, spec, terms, params)
        read = {**computed.types, **simple}
        _check_same_draft(path, spec, read)
        derived = load_derived(root / "derived.yaml", read, params)
        facts = {**read, **derived.types}
        factbook = FactBook(built, terms, params, spec.facts, computed.steps, derived.apply)
        links = parse(root / "links.yaml", _LinksFile).links
        orders = Orders.load(
            root / "orders.yaml", facts, set(get_args(LinkKey)), set(get_args(Orderable))
        )
        rulebook = RuleBook.load(root / "rules", facts, params, links, orders)
        worsening = load_worsening(root / "worsening.yaml", facts)
        site = load_site(site_file, {rule.id for rule in rulebook.rules}, rulebook.retired)
        return cls(
            services,
            params,
            terms,
            factbook,
            rulebook.for_site(site),
            facts,
            derived,
            computed.sources,
            worsening,
            site,
            tuple(spec.same_draft),
        )


def _load_parameters(path: Path) -> dict[str, Any]:
    params = parse(path, Parameters).model_dump()
    # The bands name the severity fact's values: a band outside them would give rules a
    # severity they cannot test for (and the rule checker refuses to compare with).
    for field in ("phq9_bands", "combination_severities"):
        for band in params[field]:
            if band not in SEVERITIES:
                allowed = ", ".join(repr(s) for s in SEVERITIES)
                raise KnowledgeError(
                    f"{path}: {field}: {band!r} is not a severity (one of {allowed})"
                )
    return params


def _declared_facts(path: Path, spec: _FactsFile) -> dict[str, FactSpec]:
    """The extractions of facts.yaml that are facts themselves: those with a meaning."""
    computed = {fact for group in spec.computed.values() for fact in group.sets}
    found = {}
    for name, decl in spec.facts.items():
        if decl.meaning is None:
            continue
        if name in computed:
            raise KnowledgeError(f"{path}: facts.{name}: {name!r} is already a fact")
        found[name] = FactSpec(bool, decl.meaning, explained=True)
    return found


def _check_same_draft(path: Path, spec: _FactsFile, read: Mapping[str, FactSpec]) -> None:
    for name in spec.same_draft:
        if name not in read or not read[name].explained:  # a derived fact keeps none
            raise KnowledgeError(
                f"{path}: same_draft: {name!r} is not a fact that keeps its references"
            )


def _load_facts(
    path: Path, spec: _FactsFile, terms: Terminology, params: dict[str, Any]
) -> dict[str, extractors.Extractor]:
    """The extractions, checked and built."""
    for alias, url in spec.valuesets.items():
        if url not in terms:
            raise KnowledgeError(f"{path}: valuesets.{alias}: no value set {url}")
    built = {}
    for name, decl in spec.facts.items():
        for field in ("valueset", "ingredients", "unless_coded", "sum_of", "answers"):
            ref = getattr(decl, field, None)
            if ref is not None and ref not in terms:
                raise KnowledgeError(f"{path}: facts.{name}.{field}: no value set {ref}")
        for field in ("days", "max"):
            param = getattr(decl, field, None)
            if param is not None and param not in params:
                raise KnowledgeError(f"{path}: facts.{name}.{field}: no parameter {param!r}")
        for i, x in enumerate(getattr(decl, "not_when", [])):
            where = f"{path}: facts.{name}.not_when[{i}]"
            for url in (x.valueset, x.reason):
                if url is not None and url not in terms:
                    raise KnowledgeError(f"{where}: no value set {url}")
            if x.daily_mg_at_most is not None and x.daily_mg_at_most not in params:
                raise KnowledgeError(f"{where}: no parameter {x.daily_mg_at_most!r}")
        answers = getattr(decl, "answers", None)
        if getattr(decl, "sum_of", None) is not None and answers is None:
            raise KnowledgeError(
                f"{path}: facts.{name}.sum_of: a sum of items needs the answers value set that "
                "scores them"
            )
        if answers is not None:
            # An item answered with a code scores its concept's ordinalValue in the value set.
            scores = terms.ordinals(answers)
            unscored = sorted(c for c, score in scores.items() if score is None or score % 1)
            if unscored or not scores:
                raise KnowledgeError(
                    f"{path}: facts.{name}.answers: "
                    + (f"{unscored[0]} needs" if unscored else "its concepts need")
                    + " a whole-number ordinalValue (its score)"
                )
        built[name] = extractors.build(decl, terms, params)
    return built


def _load_services(path: Path) -> dict[str, Service]:
    parsed = parse(path, _ServicesFile)
    services: dict[str, Service] = {}
    for svc in parsed.services:
        if svc.id in services:
            raise KnowledgeError(f"{path}: duplicate service id {svc.id!r}")
        if svc.hook not in REQUEST_MODELS:
            raise KnowledgeError(f"{path}: service {svc.id!r}: unsupported hook {svc.hook!r}")
        for key, template in (svc.prefetch or {}).items():
            for token in PREFETCH_TOKEN.findall(template):
                if not (token.startswith("context.") or token in PREFETCH_USER_TOKENS):
                    raise KnowledgeError(
                        f"{path}: service {svc.id!r}: prefetch {key!r}: unknown token {token!r}"
                    )
        services[svc.id] = svc
    return dict(sorted(services.items()))
