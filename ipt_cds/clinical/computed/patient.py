"""Who the call is about: the hook, the patient's id and age."""

from __future__ import annotations

from datetime import date

from ipt_cds.clinical.fact_library import Call, Compute, Needs, computes, typed
from ipt_cds.clinical.reader import age_on, first_date
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.protocol.vocabulary import Hook

# Ages outside this range come from placeholder or mistyped birth dates (0001-01-01, a year in
# the future), not from patients: the age is unknown.
PLAUSIBLE_AGE = range(0, 131)


@computes("patient", {"hook": typed(Hook), "patient_id": typed(str), "age": typed(int | None)})
def patient(needs: Needs) -> Compute:
    def compute(call: Call) -> None:
        call.set("hook", call.hook)
        call.set("patient_id", call.record.patient_id)
        call.set("age", _age(call.record, call.today))

    return compute


def _age(record: PatientRecord, today: date) -> int | None:
    birth = first_date(record.patient, "birthDate") if record.patient else None
    age = age_on(birth, today) if birth else None
    return age if age in PLAUSIBLE_AGE else None
