"""Read a population export: each resource the services can use, with the patient it is about.

Two layouts: a Bulk Data ``$export`` folder (NDJSON, one resource per line, any file name ending
``.ndjson`` or ``.ndjson.gz``, so ``Condition.2.ndjson`` too), or, when the folder holds no
NDJSON, a folder tree of FHIR Bundles in ``.json`` files (``fhir_fixtures/`` replays so).

Nothing in the input stops the reading: a line that is not a FHIR resource, a resource that
names no patient, a JSON file that is not a Bundle are counted and the first few located
(file and line, never the content: it is patient data; a Bundle file by its number, since its
name is often the patient's). Files whose Bulk name declares a type no service reads
(``Claim.ndjson``) are skipped without parsing: real exports are mostly those.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ipt_cds.fhir.answers import parse_reference

# How many places of each problem the summary lists.
FIRST = 5
_TYPE_IN_NAME = re.compile(r"^(?:\d+[._-])?([A-Z][A-Za-z]{1,63})(?:[._-]\d+)?\.ndjson(?:\.gz)?$")
_BOM = b"\xef\xbb\xbf"
# What each problem is, in the words of the terminal paragraph and the report.
PROBLEMS = {
    "unparsable": "lines or entries that are not a FHIR resource",
    "withoutPatient": "resources naming no patient (or one whose id is not a FHIR id)",
    "withoutId": "Medications without an id",
    "patientNotInExport": "resources of patients not in the export",
    "unreadableFile": "damaged files, read up to the damage",
}


def name_order(name: str) -> list[Any]:
    """Files in natural order (``Condition.2`` before ``Condition.10``, ``bundle-9`` before
    ``bundle-10``): the order they are read in, and the order their problems are listed in."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


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
            merged = {*self.first.get(kind, []), *places}
            self.first[kind] = sorted(merged, key=lambda p: (name_order(p[0]), p[1]))[:FIRST]


@dataclass(frozen=True)
class Item:
    """One usable resource: about ``patient`` (its id), or shared (a Medication) when None."""

    patient: str | None
    kind: str
    id: str | None
    body: bytes


def input_files(root: Path) -> tuple[str, list[Path]]:
    """The layout ("ndjson" or "bundles") and its files, in a stable order."""
    if not root.exists():
        raise ReplayInputError(
            f"{root} does not exist: give the folder of a Bulk Data export or of FHIR Bundles"
        )
    if not root.is_dir():
        raise ReplayInputError(
            f"{root} is a file, not a folder (a Bulk Data export or FHIR Bundles)"
        )

    def order(path: Path) -> list[Any]:
        return name_order(path.relative_to(root).as_posix())

    found = [p for p in root.rglob("*") if p.is_file()]
    ndjson = sorted((p for p in found if p.name.endswith((".ndjson", ".ndjson.gz"))), key=order)
    if ndjson:
        return "ndjson", ndjson
    bundles = sorted((p for p in found if p.name.endswith(".json")), key=order)
    if bundles:
        return "bundles", bundles
    raise ReplayInputError(f"{root} holds no .ndjson, .ndjson.gz or .json files: nothing to replay")


def display_names(root: Path, layout: str, files: list[Path]) -> list[str]:
    """How the summary names each file: an NDJSON file by its name (a resource type), a
    Bundle by its number in name order, as its name often names the patient."""
    if layout == "bundles":
        return [f"bundle-{i}" for i in range(1, len(files) + 1)]
    return [p.relative_to(root).as_posix() for p in files]


def left_out(root: Path, layout: str) -> list[str]:
    """JSON files beside an NDJSON export, which replay does not read (the Bulk manifest
    aside): listed as skipped, so that a Bundle dropped there is not lost unseen."""
    if layout != "ndjson":
        return []
    found = (p for p in root.rglob("*.json") if p.is_file() and p.name != "manifest.json")
    return sorted((p.relative_to(root).as_posix() for p in found), key=name_order)


def referenced_id(text: str, kind: str) -> str | None:
    """The id a reference gives to a resource of ``kind`` (``Patient/1``, an absolute URL,
    a version ``/_history/2``); None for another type or no reference."""
    named = parse_reference(text)
    return named[1] if named is not None and named[0] == kind else None


def declared_type(path: Path) -> str | None:
    """The resource type a Bulk Data file name declares (``Condition.2.ndjson``), if any."""
    match = _TYPE_IN_NAME.match(path.name)
    return match.group(1) if match else None


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource is about: its own for a Patient, else its subject's
    or patient's reference."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for name in ("subject", "patient"):
        ref = resource.get(name)
        text = ref.get("reference") if isinstance(ref, dict) else None
        found = referenced_id(text, "Patient") if isinstance(text, str) else None
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Kinds:
    """The resource types replay keeps: about a patient (``own``), or ``shared`` (Medication);
    the rules for one resource, the same on every engine."""

    own: frozenset[str]
    shared: frozenset[str]

    def line(self, raw: bytes) -> Item | str | None:
        """An NDJSON line as an Item, a problem's name, or None (a type no service reads)."""
        raw = raw.removeprefix(_BOM)  # a file may start with one; Hadoop drops it too
        resource, exact = _loads(raw)
        if resource is None:
            return "unparsable"
        # The line itself is the body, unless it had to be decoded (then it is re-encoded).
        return self.resource(resource, raw.strip() if exact else None)

    def resource(self, resource: Any, raw: bytes | None) -> Item | str | None:
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
        patient = patient_of(resource)
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
            with open_lines(path) as lines:
                first = next((line for line in lines if line.strip()), b"")
            resource = orjson.loads(first)
        except (OSError, EOFError, orjson.JSONDecodeError):
            return False
        return isinstance(resource, dict) and resource.get("resourceType") == declared

    def bundle_file(self, path: Path) -> list[Item | str | None] | None:
        """``bundle`` of a file; None too when it cannot be read."""
        try:
            return self.bundle(path.read_bytes())
        except OSError:
            return None

    def bundle(self, data: bytes) -> list[Item | str | None] | None:
        """A Bundle file's entries as ``line`` gives them; None when it is not a Bundle."""
        bundle, _ = _loads(data.removeprefix(_BOM))
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return None
        entries = bundle.get("entry")
        if not isinstance(entries, list):
            return []
        return [
            # An entry without a resource (a transaction's DELETE) is nothing to read.
            None if isinstance(e, dict) and "resource" not in e else self.resource(r, None)
            for e, r in zip(entries, _resolved(entries), strict=True)
        ]


class Reader:
    """Reads the export once, in order, handing out the resources ``kinds`` keeps."""

    def __init__(self, root: Path, kinds: Kinds) -> None:
        self.root = root
        self.layout, self.files = input_files(root)
        self.kinds = kinds
        self.problems = Problems()
        self.skipped_files: list[str] = left_out(root, self.layout)
        self.lines = 0
        self._names = dict(
            zip(self.files, display_names(root, self.layout, self.files), strict=True)
        )

    def name(self, path: Path) -> str:
        return self._names[path]

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
            with open_lines(path) as lines:
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
        entries = self.kinds.bundle_file(path)
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


def _resolved(entries: list[Any]) -> list[Any]:
    """The entries' resources as a server stores a transaction: a resource without an id gets
    its ``urn:uuid:`` fullUrl's uuid, and references to any entry's fullUrl become
    ``Type/id`` (a patient's, a Medication's)."""
    aliases: dict[str, str] = {}
    resources: list[Any] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            rid = resource.get("id")
            if not isinstance(rid, str) and isinstance(url, str) and url.startswith("urn:uuid:"):
                rid = url.removeprefix("urn:uuid:")
                resource = {**resource, "id": rid}
            if isinstance(url, str) and isinstance(rid, str):
                aliases[url] = f"{resource['resourceType']}/{rid}"
        resources.append(resource)
    if aliases:
        for resource in resources:
            _rewrite(resource, aliases)
    return resources


def _rewrite(node: Any, aliases: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in aliases:
            node["reference"] = aliases[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                _rewrite(value, aliases)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value, aliases)


def _loads(raw: bytes) -> tuple[Any, bool]:
    """JSON (None if it is not), and whether ``raw`` is that JSON as it is. Bytes that are not
    UTF-8 (which NDJSON must be) are read as Hadoop's text reader reads them, each bad sequence
    a U+FFFD, so that both engines see the same resource."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        pass
    try:
        raw.decode("utf-8")
        return None, False  # UTF-8, and still not JSON
    except UnicodeDecodeError:
        pass
    try:
        return orjson.loads(raw.decode("utf-8", "replace")), False
    except orjson.JSONDecodeError:
        return None, False


def open_lines(path: Path) -> IO[bytes] | gzip.GzipFile:
    """A file's lines as bytes, gunzipped if need be. An empty .gz is no gzip: it raises
    EOFError, as a truncated one does, rather than read as an empty file unseen."""
    if path.name.endswith(".gz"):
        if path.stat().st_size == 0:
            raise EOFError(f"{path.name} is empty")
        return gzip.open(path, "rb")
    return path.open("rb")
