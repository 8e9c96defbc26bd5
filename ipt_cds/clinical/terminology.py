"""Value sets, indexed once at start-up: membership is one dict lookup per coding.

The value sets come from ``cards/valuesets/`` (read by ipt_cds/knowledge/valuesets.py) and are
referred to by canonical URL everywhere else in ``cards/``.

A value set may also hold code families too large to enumerate (ICD-10-CM X71-X83, say) as
FHIR ``compose.include.filter`` entries with ``op: regex``. Such a regex is matched, in full,
against the *normalised* code (``normal_code``: for ICD-10-CM upper case without dots, so
``T43.222A`` is matched as ``T43222A``). The regexes are compiled once, indexed by code system,
and tried only for a coding of a system some value set filters on, after the dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ipt_cds.clinical.reader import codings, texts
from ipt_cds.protocol.vocabulary import ICD10CM, SYSTEM_ALIASES

# How many distinct codings of records ``Terminology`` keeps looked up (a few MB at most).
SEEN_CODES = 20_000


@dataclass(frozen=True)
class Match:
    system: str
    code: str
    display: str | None


def normal_code(system: str, code: str) -> str:
    """ICD-10-CM arrives as F33.1, F331 or f33.1; index and look up one form."""
    code = code.strip()
    return code.upper().replace(".", "") if system == ICD10CM else code


@dataclass(frozen=True)
class Concept:
    """One code of a value set, as ipt_cds/knowledge/valuesets.py read it from its file."""

    system: str
    code: str
    display: str | None = None
    ordinal: float | None = None


@dataclass(frozen=True)
class CodeFilter:
    """A family of codes of one system: those whose normalised code (``normal_code``; for
    ICD-10-CM upper case without dots) the regex matches in full (FHIR ``filter`` with
    ``property: code``, ``op: regex``). The loader compiles and checks it."""

    system: str
    pattern: re.Pattern[str]


class Terminology:
    def __init__(
        self,
        titles: dict[str, str],
        concepts: dict[str, list[Concept]],
        filters: dict[str, list[CodeFilter]] | None = None,
    ) -> None:
        """``titles``, ``concepts`` and ``filters`` are keyed by the value sets' canonical URLs."""
        self.titles = dict(titles)
        self._index: dict[tuple[str, str], set[str]] = {}
        self._displays: dict[str, list[str]] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._ordinals: dict[str, dict[str, float | None]] = {}
        # The codings met in records, as ``_look_up`` answers them.
        self._seen: dict[tuple[str, str], tuple[str, str, tuple[str, ...], str | None]] = {}
        for url, members in concepts.items():
            for concept in members:
                key = (concept.system, normal_code(concept.system, concept.code))
                self._index.setdefault(key, set()).add(url)
                if concept.display:
                    self._displays.setdefault(url, []).append(concept.display)
                    self._names.setdefault(key, concept.display)
                self._ordinals.setdefault(url, {})[concept.code] = concept.ordinal
        # Regex families: by system, each distinct pattern once with the value sets it is in
        # (for ``memberships``), and by (value set, system) (for ``contains``). A system no
        # value set filters on costs one failed dict lookup, nothing more.
        self._filters: dict[str, list[tuple[re.Pattern[str], tuple[str, ...]]]] = {}
        self._filters_of: dict[tuple[str, str], list[re.Pattern[str]]] = {}
        grouped: dict[str, dict[re.Pattern[str], list[str]]] = {}
        for url, families in (filters or {}).items():
            for family in families:
                urls = grouped.setdefault(family.system, {}).setdefault(family.pattern, [])
                if url not in urls:
                    urls.append(url)
                self._filters_of.setdefault((url, family.system), []).append(family.pattern)
        for system, patterns in grouped.items():
            self._filters[system] = [(p, tuple(urls)) for p, urls in patterns.items()]

    def display(self, system: str, code: str) -> str | None:
        """A code's display as a value set of ours gives it, or None."""
        return self._names.get((system, normal_code(system, code)))

    def __contains__(self, url: object) -> bool:
        return url in self.titles

    def ordinals(self, url: str) -> dict[str, float | None]:
        """Each code of the value set with its ordinalValue (a score), None where it has none."""
        return dict(self._ordinals.get(url, {}))

    def contains(self, url: str, system: str, code: str) -> bool:
        normal = normal_code(system, code)
        if url in self._index.get((system, normal), ()):
            return True
        patterns = self._filters_of.get((url, system))
        return patterns is not None and any(p.fullmatch(normal) for p in patterns)

    def match(self, url: str, concept: Any) -> Match | None:
        """The first coding of a CodeableConcept (or list of them) that is in the value set."""
        for system, code, display in codings(concept):
            if self.contains(url, system, code):
                # Many EHR codings carry no display; the value set's name for the code reads better.
                return Match(
                    system, code, display or self._names.get((system, normal_code(system, code)))
                )
        return None

    def memberships(self, concept: Any) -> dict[str, Match]:
        """Every value set any coding of the concept is in, with the first coding that is."""
        # The hot loop of every call (each coded resource passes here once). Nearly every
        # concept in a record is one well-formed coding: that case is answered a third faster
        # on its own; anything else takes the general walk below.
        if type(concept) is dict:
            coding_list = concept.get("coding")
            if type(coding_list) is list and len(coding_list) == 1:
                coding = coding_list[0]
                if type(coding) is dict:
                    system, code = coding.get("system"), coding.get("code")
                    if type(system) is str and type(code) is str:
                        seen = self._seen.get((system, code)) or self._look_up(system, code)
                        system_, code_, urls, name = seen
                        if not urls:
                            return {}
                        display = coding.get("display")
                        said = display if isinstance(display, str) else name
                        return dict.fromkeys(urls, Match(system_, code_, said))
        return self._walk(concept)

    def _walk(self, concept: Any) -> dict[str, Match]:
        # Written out rather than through reader.codings, which costs twice as much.
        found: dict[str, Match] = {}
        for cc in concept if isinstance(concept, list) else (concept,):
            if not isinstance(cc, dict):
                continue
            coding_list = cc.get("coding")
            if isinstance(coding_list, dict):
                coding_list = [coding_list]
            elif not isinstance(coding_list, list):
                continue
            for coding in coding_list:
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str) or not isinstance(code, str | int):
                    continue
                # Records repeat a few hundred codes (vitals, common problems) across every
                # patient: each is looked up, regexes included, once per process.
                if not isinstance(code, str):
                    code = str(code)
                seen = self._seen.get((system, code))
                if seen is None:
                    seen = self._look_up(system, code)
                system_, code_, urls, name = seen
                if not urls:
                    continue
                display = coding.get("display")
                for url in urls:
                    if url not in found:
                        found[url] = Match(
                            system_, code_, display if isinstance(display, str) else name
                        )
        return found

    def _look_up(self, system: str, code: str) -> tuple[str, str, tuple[str, ...], str | None]:
        """A coding's system (its alias resolved), code, value sets and our display for it,
        kept in a bounded table (codes come from records: a flood of new ones cannot grow it)."""
        system = SYSTEM_ALIASES.get(system, system)
        text = code.strip()
        key = (system, normal_code(system, text))
        urls = set(self._index.get(key, ()))
        for pattern, holders in self._filters.get(system, ()):
            # Only systems some value set filters on pay for the regexes.
            if pattern.fullmatch(key[1]):
                urls.update(holders)
        seen = (system, text, tuple(sorted(urls)), self._names.get(key))
        if len(self._seen) >= SEEN_CODES:
            self._seen.clear()
        self._seen[(system, code)] = seen
        return seen

    def displays(self, url: str) -> list[str]:
        return self._displays.get(url, [])


class NameMatcher:
    """Finds value-set display names as whole words in free text (drug names, therapy names)."""

    def __init__(self, names: Iterable[str]) -> None:
        words = sorted({n.strip().lower() for n in names if n.strip()}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b") if words else None
        )

    def find(self, concept: Any) -> str | None:
        if self._pattern is None:
            return None
        for text in texts(concept):
            found = self._pattern.search(text.lower())
            if found:
                return found.group(1)
        return None
