"""Read a population export: each resource the services can use, with the patient it is about.

Two layouts: a Bulk Data ``$export`` folder (NDJSON, one resource per line, any file name ending
``.ndjson`` or ``.ndjson.gz``, so ``Condition.2.ndjson`` too), or, when the folder holds no
NDJSON, a folder tree of FHIR Bundles in ``.json`` files (``fhir_fixtures/`` replays so).

Nothing in the input stops the reading: a line that is not a FHIR resource, a resource that
names no patient, a JSON file that is not a Bundle are counted and the first few located
(file and line, never the content: it is patient data). Files whose Bulk name declares a type
no service reads (``Claim.ndjson``) are skipped without parsing: real exports are mostly those.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

# How many places of each problem the summary lists.
FIRST = 5
_TYPE_IN_NAME = re.compile(r"^(?:\d+[._-])?([A-Z][A-Za-z]{1,63})(?:[._-]\d+)?\.ndjson(?:\.gz)?$")
_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


class ReplayInputError(Exception):
    """The input cannot be replayed at all (a missing or empty folder)."""


@dataclass
class Problems:
    """Counts of what was skipped, and where the first few were (``file:line``)."""

    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def add(self, kind: str, where: tuple[str, int]) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        places = self.first.setdefault(kind, [])
        if len(places) < FIRST:
            places.append(where)

    def merge(self, other: Problems) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
        for kind, places in other.first.items():
            self.first[kind] = sorted({*self.first.get(kind, []), *places})[:FIRST]


@dataclass(frozen=True)
class Item:
    """One usable resource: about ``patient`` (its id), or shared (a Medication) when None."""

    patient: str | None
    kind: str
    id: str | None
    body: bytes


def input_files(root: Path) -> tuple[str, list[Path]]:
    """The layout ("ndjson" or "bundles") and its files, in a stable order."""
    if not root.is_dir():
        raise ReplayInputError(f"{root} is not a folder (a Bulk Data export or FHIR Bundles)")

    def order(path: Path) -> str:
        # By relative name: the order the summary's "first" places are listed in.
        return path.relative_to(root).as_posix()

    found = [p for p in root.rglob("*") if p.is_file()]
    ndjson = sorted((p for p in found if p.name.endswith((".ndjson", ".ndjson.gz"))), key=order)
    if ndjson:
        return "ndjson", ndjson
    bundles = sorted((p for p in found if p.name.endswith(".json")), key=order)
    if bundles:
        return "bundles", bundles
    raise ReplayInputError(f"{root} holds no .ndjson, .ndjson.gz or .json files: nothing to replay")


def declared_type(path: Path) -> str | None:
    """The resource type a Bulk Data file name declares (``Condition.2.ndjson``), if any."""
    match = _TYPE_IN_NAME.match(path.name)
    return match.group(1) if match else None


def patient_of(resource: dict[str, Any], aliases: dict[str, str] | None = None) -> str | None:
    """The id of the patient a resource is about: its own for a Patient, else its subject's
    or patient's reference (``Patient/1``, an absolute URL, a Bundle's ``urn:uuid:``)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for name in ("subject", "patient"):
        ref = resource.get(name)
        text = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(text, str):
            continue
        if aliases and text in aliases:
            return aliases[text]
        match = _REFERENCE.search(text)
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True)
class Kinds:
    """The resource types replay keeps: about a patient (``own``), or ``shared`` (Medication);
    the rules for one resource, the same on every engine."""

    own: frozenset[str]
    shared: frozenset[str]

    def line(self, raw: bytes) -> Item | str | None:
        """An NDJSON line as an Item, a problem's name, or None (a type no service reads)."""
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "unparsable"
        return self.resource(resource, None, raw.strip())

    def resource(
        self, resource: Any, aliases: dict[str, str] | None, raw: bytes | None
    ) -> Item | str | None:
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(kind, str):
            return "unparsable"
        if kind not in self.own and kind not in self.shared:
            return None
        rid = resource.get("id")
        rid = rid if isinstance(rid, str) else None
        if kind in self.shared:
            if rid is None:
                return "withoutId"
            return Item(None, kind, rid, raw or orjson.dumps(resource))
        patient = patient_of(resource, aliases)
        if patient is None:
            return "withoutPatient"
        return Item(patient, kind, rid, raw or orjson.dumps(resource))

    def skips(self, path: Path) -> bool:
        """Whether a Bulk file holds a type no service reads, so that it is not parsed: its
        name declares the type (``Claim.2.ndjson``) and its first resource is one."""
        declared = declared_type(path)
        if declared is None or declared in self.own | self.shared:
            return False
        try:
            with _open(path) as lines:
                first = next((line for line in lines if line.strip()), b"")
            resource = orjson.loads(first)
        except (OSError, EOFError, orjson.JSONDecodeError):
            return False
        return isinstance(resource, dict) and resource.get("resourceType") == declared

    def bundle(self, data: bytes) -> list[Item | str | None] | None:
        """A Bundle file's entries as ``line`` gives them; None when it is not a Bundle."""
        try:
            bundle = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return None
        entries = bundle.get("entry")
        if not isinstance(entries, list):
            return []
        aliases = _aliases(entries)
        return [
            self.resource(e.get("resource") if isinstance(e, dict) else None, aliases, None)
            for e in entries
        ]


class Reader:
    """Reads the export once, in order, handing out the resources ``kinds`` keeps."""

    def __init__(self, root: Path, kinds: Kinds) -> None:
        self.root = root
        self.layout, self.files = input_files(root)
        self.kinds = kinds
        self.problems = Problems()
        self.skipped_files: list[str] = []
        self.lines = 0

    def name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def items(self) -> Iterator[Item]:
        for path in self.files:
            if self.layout == "ndjson":
                yield from self._ndjson(path)
            else:
                yield from self._bundle(path)

    def _ndjson(self, path: Path) -> Iterator[Item]:
        name = self.name(path)
        if self.kinds.skips(path):
            self.skipped_files.append(name)
            return
        number = 0
        try:
            with _open(path) as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    self.lines += 1
                    yield from self._kept(self.kinds.line(line), (name, number))
        except (OSError, EOFError):
            # A truncated or corrupt gzip: what was read stands, the rest of the file is lost.
            self.problems.add("unreadableFile", (name, number + 1))

    def _bundle(self, path: Path) -> Iterator[Item]:
        name = self.name(path)
        try:
            entries = self.kinds.bundle(path.read_bytes())
        except OSError:
            entries = None
        if entries is None:
            self.skipped_files.append(name)
            return
        for number, entry in enumerate(entries, start=1):
            self.lines += 1
            yield from self._kept(entry, (name, number))

    def _kept(self, entry: Item | str | None, where: tuple[str, int]) -> Iterator[Item]:
        if isinstance(entry, str):
            self.problems.add(entry, where)
        elif entry is not None:
            yield entry


def _aliases(entries: list[Any]) -> dict[str, str]:
    """A Bundle's ``fullUrl`` of each Patient, for references by ``urn:uuid:``."""
    found: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource, url = entry.get("resource"), entry.get("fullUrl")
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            if isinstance(url, str) and isinstance(rid, str):
                found[url] = rid
    return found


def _open(path: Path) -> IO[bytes] | gzip.GzipFile:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")
