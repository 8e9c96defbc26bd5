"""Each prefetch query as it is asked of one server: shaped to its CapabilityStatement, with a
simpler search to fall back on once, and the filters applied to whatever it answers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from ipt_cds.fhir.answers import Query
from ipt_cds.fhir.capabilities import Capabilities
from ipt_cds.fhir.filters import SearchFilter

# What a simpler search keeps: whom it is about, and the parameters US Core makes mandatory
# beside the patient (MedicationRequest's intent, Observation's code). The rest (status,
# category, _include) is left to the filters and to reading references by id.
_KEPT = frozenset({"patient", "patient:Patient", "subject", "subject:Patient", "intent", "code"})
# Characters a shaped query keeps as they are, as the templates write them.
_SAFE = ",|:/"


@dataclass(frozen=True)
class Plan:
    key: str
    # The resource type searched or read; None for another kind of query.
    kind: str | None
    first: Query
    simpler: Query | None
    filter: SearchFilter
    # False when the server's CapabilityStatement does not list the resource type.
    offered: bool = True

    @classmethod
    def make(cls, key: str, text: str, capabilities: Capabilities | None) -> Plan:
        asked = Query.parse(key, text)
        if asked.kind is None or asked.is_read:
            return cls(key, asked.kind, asked, None, SearchFilter())
        path, _, params = text.strip().partition("?")
        shaped = params
        if capabilities is not None:
            if not capabilities.offers_type(asked.kind):
                return cls(key, asked.kind, asked, None, SearchFilter(), offered=False)
            shaped, _ = capabilities.shape(asked.kind, params)
        first = Query.parse(key, _join(path, shaped)) if shaped != params else asked
        kept = [(n, v) for n, v in parse_qsl(shaped, keep_blank_values=True) if n in _KEPT]
        simpler_text = _join(path, urlencode(kept, safe=_SAFE))
        simpler = Query.parse(key, simpler_text) if simpler_text != first.text else None
        return cls(key, asked.kind, first, simpler, SearchFilter.of(params))


def _join(path: str, params: str) -> str:
    return f"{path}?{params}" if params else path
