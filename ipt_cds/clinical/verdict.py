"""The suitability verdict of the clinical spec section 2: is IPT suitable for this patient now?

Every hook reuses it. First match wins; the cautions and supports travel with it, each in
words a clinician reads on the card, and only those that apply.
"""

from __future__ import annotations

from typing import Any

from ipt_cds.clinical.fact_model import Facts, Verdict

CAUTIONS = {
    "cognitive_impairment": "cognitive impairment",
    "anxiety": "comorbid anxiety disorder",
    "personality_disorder": "personality disorder",
    "chd": "coronary heart disease",
}
SUPPORTS = {
    "pregnant": "pregnancy",
    "postpartum": "postpartum period",
    "hiv": "HIV infection",
}


def verdict(f: Facts, params: dict[str, Any]) -> None:
    age = f["age"]
    older = age is not None and age >= params["older_adult_age"]
    above_minimal = f["severity"] != "minimal"  # unknown severity counts
    # From 70 maintenance IPT did not prevent recurrence (refs 41, 42): in remission, whatever
    # the symptoms now, an antidepressant is what the evidence prefers (the clinical spec v3 7.3).
    older_remitted = older and f["remission"] is not None
    found: Verdict
    if not f["depression"]:
        found, reasons = "not-applicable", ["no active depressive disorder on record"]
    elif f["psychosis"]:
        found, reasons = "not-recommended", [f"psychotic features ({f.why['psychosis']})"]
    elif f["bipolar"]:
        found = "specialist"
        reasons = [f"bipolar disorder ({f.why['bipolar']}): the plan belongs with its treatment"]
    elif not f["adult"]:
        found, reasons = "not-adult", [f"age {age}: the adult evidence does not apply"]
    elif f["needs_combination"]:
        found, reasons = "combine", list(f["combination_reasons"])
    elif ((f["dysthymia"] or (older and f["acute"])) and above_minimal) or older_remitted:
        found = "antidepressant-preferred"
        reasons = [f"dysthymia ({f.why['dysthymia']})"] if f["dysthymia"] and above_minimal else []
        if older and f["acute"] and above_minimal:
            reasons.append(f"age {age} with an acute episode")
        if older_remitted:
            reasons.append(
                f"age {age}, episode in remission: maintenance IPT did not prevent recurrence "
                "from 70 (refs 41, 42)"
            )
    else:
        found = "suitable"
        if f["severity"] is None:
            reasons = ["suitable if the depression is mild to moderate: measure severity first"]
        elif f["severity"] == "minimal" and f["remission"] is not None:
            # A coded remission is never questioned (the clinical spec v3 section 7.3).
            reasons = [f"minimal symptoms ({f['severity_basis']}), episode in remission"]
        elif f["severity"] == "minimal":
            reasons = [f"minimal symptoms ({f['severity_basis']}): has the episode remitted?"]
        else:
            reasons = [f"{f['severity'].replace('-', ' ')} depression ({f['severity_basis']})"]
    f.set("verdict", found)
    f.set("verdict_reasons", reasons)
    cautions = [text for name, text in CAUTIONS.items() if f[name]]
    # Past suicidal behaviour is named on its own line of the card that speaks (version 3,
    # section 7.3), not again among the cautions; past ideation alone is a caution.
    if f["suicidal_ideation"] == "history" and f["suicide_behaviour"] is None:
        cautions.append(f"past suicidal ideation ({f['suicidal_ideation_basis']})")
    f.set("cautions", cautions)
    # What favours IPT whatever the card: each card that lists it adds, in its own words, what
    # a recurrent episode means for the order it speaks about.
    f.set("supports", [text for name, text in SUPPORTS.items() if f[name]])
