"""The words the service and its knowledge base share, each defined once.

Hooks and indicators are CDS Hooks 2.0's; the code-system URIs are FHIR's canonical ones for
the terminologies our value sets are written in; the rule and override-reason systems are ours.
"""

from __future__ import annotations

from typing import Literal, get_args

# The hooks we answer (the CDS Hooks library's order-entry hooks and patient-view): rule and
# fixture files are checked against this type, requests against models.REQUEST_MODELS. A Literal
# cannot be built from that registry (nor can this module import models, which imports it), so
# a new hook is named in both; tests/test_models.py fails until they agree.
Hook = Literal["order-select", "order-sign", "patient-view"]
HOOKS: tuple[Hook, ...] = get_args(Hook)

# Card indicators, most urgent first: cards are returned in this order.
Indicator = Literal["critical", "warning", "info"]
INDICATORS: tuple[Indicator, ...] = get_args(Indicator)
INDICATOR_RANK: dict[str, int] = {name: rank for rank, name in enumerate(INDICATORS)}

# CDS Hooks 2.0: a card's summary "SHOULD be under 140 characters".
SUMMARY_MAX_CHARS = 139

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
# Other names EHRs send those code systems under (their OIDs, ICD-10 for ICD-10-CM): the facts
# and the search filters both read a coding's system through this table, so that a resource
# the facts would count is never dropped as not matching a search.
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
}
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# Our own code systems: a card's source.topic names the rule; override reasons are coded.
RULE_SYSTEM = "https://fhir.ipt-cds.org/CodeSystem/ipt-cds-rule"
OVERRIDE_SYSTEM = "https://fhir.ipt-cds.org/CodeSystem/override-reason"

# A hook call's answer header naming the cards the card memory held back: ``rule; why=repeat;
# minutes=12``, comma-separated (ipt_cds/http/routes.py; ``ipt-cds invoke`` prints it).
HELD_BACK_HEADER = "IPT-CDS-Held-Back"
