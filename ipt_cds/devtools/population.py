"""A synthetic population as a Bulk Data export, for demos, tests and benchmarks of replay.

Replay (``ipt-cds replay``) answers the services' prefetch from a population export, and needs
populations far larger than the fixture cases, shaped like a real export (most patients not
depressed) yet holding no one's data. The patients come from population_records.py; this
module writes them as a Bulk Data ``$export`` folder: NDJSON by resource type, in numbered parts,
and a completion manifest. Same n, seed and day give byte-identical files.

Patients are written one by one, so memory does not grow with n.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

import orjson

from ipt_cds.devtools.population_records import Synthesizer

SYNTHETIC = "https://fhir.ipt-cds.org/StructureDefinition/synthetic-population"


@dataclass(frozen=True)
class SynthReport:
    patients: int
    resources: dict[str, int]
    files: list[str]  # as listed in the manifest, then manifest.json


def synthesize(
    n: int,
    seed: int,
    out: Path,
    today: date,
    *,
    part_lines: int = 100_000,
    gzip_parts: bool = False,
) -> SynthReport:
    """Write n synthetic patients, dated as of ``today``, to ``out`` (new or empty)."""
    if n < 1 or part_lines < 1:
        raise ValueError("n and part_lines must be at least 1")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: refusing to write into it")
    synthesizer = Synthesizer(seed, today)  # first: it refuses when the cases are missing
    out.mkdir(parents=True, exist_ok=True)
    export = _Export(out, part_lines, gzip_parts)
    try:
        for i in range(1, n + 1):
            for r in synthesizer.patient(f"syn-{seed}-{i:06d}"):
                export.write(r["resourceType"], orjson.dumps(r))
        for medication in synthesizer.medications():  # shared: once, after their users
            export.write("Medication", medication)
    finally:
        outputs = export.close()
    manifest = {
        "transactionTime": f"{today.isoformat()}T12:00:00Z",  # replay's "now" of that day
        "request": f"urn:ipt-cds:population:synth?n={n}&seed={seed}&today={today.isoformat()}",
        "requiresAccessToken": False,
        "output": [{"type": k, "url": name, "count": c} for k, name, c in outputs],
        "error": [],
        "extension": {
            SYNTHETIC: {
                "synthetic": True,
                "note": "Invented patients (ipt-cds population synth): no person's data.",
            }
        },
    }
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    counts: dict[str, int] = {}
    for kind, _, count in outputs:
        counts[kind] = counts.get(kind, 0) + count
    return SynthReport(n, counts, [name for _, name, _ in outputs] + ["manifest.json"])


class _Export:
    """NDJSON files by resource type, a new numbered part every ``part_lines`` lines."""

    def __init__(self, out: Path, part_lines: int, gzip_parts: bool) -> None:
        self.out, self.part_lines, self.gzip = out, part_lines, gzip_parts
        # Per type being written: the writer, the file under it, the lines not yet written.
        self.open: dict[str, tuple[IO[bytes] | gzip.GzipFile, IO[bytes], list[bytes]]] = {}
        self.parts: dict[str, list[list[Any]]] = {}  # type -> [[file name, lines], ...]

    def write(self, kind: str, line: bytes) -> None:
        parts = self.parts.setdefault(kind, [])
        if not parts or parts[-1][1] == self.part_lines:
            self._close(kind)
            name = f"{kind}.{len(parts) + 1}.ndjson" if parts else f"{kind}.ndjson"
            name += ".gz" if self.gzip else ""
            raw = (self.out / name).open("wb")
            # No file name and no time in the gzip header: the same export is the same bytes.
            writer = gzip.GzipFile("", "wb", 6, raw, mtime=0) if self.gzip else raw
            self.open[kind] = (writer, raw, [])
            parts.append([name, 0])
        buffer = self.open[kind][2]
        buffer.append(line)
        parts[-1][1] += 1
        if len(buffer) >= 2048:
            self._flush(kind)

    def close(self) -> list[tuple[str, str, int]]:
        """Each file written (type, name, lines): Patient first, then by type."""
        for kind in list(self.open):
            self._close(kind)
        kinds = sorted(self.parts, key=lambda k: (k != "Patient", k))
        return [(k, name, lines) for k in kinds for name, lines in self.parts[k]]

    def _flush(self, kind: str) -> None:
        writer, _, buffer = self.open[kind]
        if buffer:
            writer.write(b"\n".join(buffer) + b"\n")
            buffer.clear()

    def _close(self, kind: str) -> None:
        if kind in self.open:
            self._flush(kind)
            writer, raw, _ = self.open.pop(kind)
            writer.close()
            raw.close()
