"""A search's filters applied here, to what a server answered.

A server may ignore a parameter (or say it does not support it, and the parameter is left out):
its answer then holds more than was asked, stopped orders or observations of other codes. The
parameters the facts rely on (``status``, ``intent``, ``code``, ``category``) are applied to
every answer here, so that every server's answer, and replay's, select the same resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ipt_cds.protocol.models import Resource
from ipt_cds.protocol.vocabulary import SYSTEM_ALIASES

# Token parameters read from a code element of the same name.
PLAIN = frozenset({"status", "intent"})
# Token parameters read from a CodeableConcept element of the same name.
CODED = frozenset({"code", "category"})

Token = tuple[str | None, str | None]


@dataclass(frozen=True)
class SearchFilter:
    """Each filtering parameter of a search: the element, and the values it accepts."""

    plain: tuple[tuple[str, frozenset[str]], ...] = ()
    coded: tuple[tuple[str, frozenset[Token]], ...] = ()

    @classmethod
    def of(cls, query: str) -> SearchFilter:
        """The filters of a search's query string (``status=active,on-hold&code=...``)."""
        plain: list[tuple[str, frozenset[str]]] = []
        coded: list[tuple[str, frozenset[Token]]] = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            values = [v for v in value.split(",") if v]
            if name in PLAIN and values:
                plain.append((name, frozenset(values)))
            elif name in CODED and values:
                coded.append((name, frozenset(token(v) for v in values)))
        return cls(tuple(plain), tuple(coded))

    def __bool__(self) -> bool:
        return bool(self.plain or self.coded)

    def matches(self, resource: Resource, *, lenient: bool = False) -> bool:
        """As a server's search would (replay's answers to the templates). ``lenient``, for an
        answer the service filters itself: a resource without the element, or with something
        other than a code in it, is kept, and codes and codings are read as the facts read
        them (a status in capitals, a code system by its OID): what the facts would count is
        theirs to weigh, not a filter's to drop."""
        for element, codes in self.plain:
            value = resource.get(element)
            if isinstance(value, str):
                if value not in codes and not (lenient and value.strip().lower() in codes):
                    return False
            elif not lenient:  # absent, or not a code at all (a list, an object)
                return False
        for element, tokens in self.coded:
            concept = resource.get(element)
            if lenient and concept is None:
                continue
            if not has_coding(concept, tokens, as_read=lenient):
                return False
        return True

    def apply(self, page: Resource, kind: str) -> Resource:
        """A searchset page without the matches of ``kind`` the filters do not select
        (included resources, the server's remarks, and resources without the element kept).
        The page itself if none goes."""
        entries = page.get("entry")
        if not self or page.get("resourceType") != "Bundle" or not isinstance(entries, list):
            return page
        kept = [e for e in entries if not self._drops(e, kind)]
        if len(kept) == len(entries):
            return page
        return {**page, "entry": kept}

    def _drops(self, entry: Any, kind: str) -> bool:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != kind:
            return False
        return not self.matches(resource, lenient=True)


def token(value: str) -> Token:
    """A token as FHIR search reads it: ``system|code``; ``code`` in any system (None);
    ``|code`` without a system (""); ``system|`` any code of the system (code None)."""
    if "|" not in value:
        return None, value
    system, _, code = value.partition("|")
    return system, code or None


def has_coding(concept: Any, codes: frozenset[Token], *, as_read: bool = False) -> bool:
    """Whether a coding of the concept is one of ``codes``, compared as a server compares them
    (as written). ``as_read``: each coding read as the facts read it (ipt_cds/clinical/reader.py
    ``codings``): a system under another name (an OID), a code with spaces around it or sent as
    a number, one coding sent as an object."""
    if as_read:
        codes = frozenset((SYSTEM_ALIASES.get(s, s) if s else s, c) for s, c in codes)
    concepts = concept if isinstance(concept, list) else [concept]
    for item in concepts:
        codings = item.get("coding") if isinstance(item, dict) else None
        listed = codings if isinstance(codings, list) else [codings] if as_read else []
        for coding in listed:
            if not isinstance(coding, dict):
                continue
            code, system = coding.get("code"), coding.get("system") or ""
            if as_read and isinstance(code, int) and not isinstance(code, bool):
                code = str(code)
            if not isinstance(code, str) or not isinstance(system, str):
                continue  # not a coding a search could match
            if as_read:
                code, system = code.strip(), SYSTEM_ALIASES.get(system, system)
            if {(system, code), (None, code), (system, None)} & codes:
                return True
    return False
