"""The suitability verdict of KNOWLEDGE.md section 2: is IPT suitable for this patient now?

Every hook reuses it. First match wins; the cautions and supports travel with it, each in
words a clinician reads on the card.
"""

from __future__ import annotations

from typing import Any

from service.clinical.fact_model import Facts, Verdict

CAUTIONS = {
    "cognitive_impairment": "cognitive impairment",
    "anxiety": "comorbid anxiety disorder",
    "personality_disorder": "personality disorder",
    "chd": "coronary heart disease",
    "bipolar": "bipolar disorder on record",
}
SUPPORTS = {
    "pregnant": "pregnancy",
    "postpartum": "postpartum period",
    "hiv": "HIV infection",
}


def verdict(f: Facts, params: dict[str, Any]) -> None:
    older = f["age"] is not None and f["age"] >= params["older_adult_age"]
    found: Verdict
    if not f["depression"]:
        found, reasons = "not-applicable", ["no active depressive disorder on record"]
    elif f["psychosis"]:
        found, reasons = "not-recommended", [f"psychotic features ({f.why['psychosis']})"]
    elif f["needs_combination"]:
        found, reasons = "combine", list(f["combination_reasons"])
    elif f["dysthymia"] or (older and f["acute"]):
        found = "antidepressant-preferred"
        reasons = [f"dysthymia ({f.why['dysthymia']})"] if f["dysthymia"] else []
        if older and f["acute"]:
            reasons.append(f"age {f['age']} with an acute episode")
    else:
        found, reasons = "suitable", ["depression without psychosis or a need for medication"]
    f.set("verdict", found)
    f.set("verdict_reasons", reasons)
    f.set("cautions", [text for name, text in CAUTIONS.items() if f[name]])
    supports = [text for name, text in SUPPORTS.items() if f[name]]
    if f["episode"] == "recurrent":
        supports.append("recurrent depression: maintenance IPT helps prevent recurrence")
    f.set("supports", supports)
