"""The repository stands on its own: nothing in it reads a path outside the checkout.

CI clones the repository with the team's workbench folder beside it, so a test that quietly
read that sibling folder would pass there and fail for everyone else; this test fails instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", ".fhir-server", "__pycache__", ".mypy_cache", ".ruff_cache"}
# Vendored data is copied, not read from elsewhere; it may mention anything.
SKIP_PREFIXES = ("tests/data/", "cards/valuesets/sources/", "fhir_fixtures/")
TEXT_SUFFIXES = {".py", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".lua", ""}
# The workbench's name is assembled, so that this file does not itself name the path it forbids.
_WORKBENCH = "sha" + "red"
OUTSIDE = re.compile(
    rf"\.\./{_WORKBENCH}|{_WORKBENCH}/reference|[\"']{_WORKBENCH}[\"']\s*/|\.\./\.\./"
)
# Path(__file__).resolve().parents[N], or .parent chained N+1 times.
PARENTS = re.compile(r"__file__\)(?:\.resolve\(\))?(?:\.parents\[(\d+)\]|((?:\.parent)+))")


def _climbs_out(line: str, depth: int) -> bool:
    """Whether a parents[N] or .parent chain in ``line`` leaves the checkout, from a file that
    sits ``depth`` folders below the checkout's root."""
    for index, chain in PARENTS.findall(line):
        up = int(index) if index else chain.count(".parent") - 1
        if up > depth:
            return True
    return False


def _project_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if rel.as_posix().startswith(SKIP_PREFIXES) or path.name == Path(__file__).name:
            continue
        if path.suffix in TEXT_SUFFIXES or path.name == "Dockerfile":
            found.append(path)
    return found


def test_no_file_reads_outside_the_checkout() -> None:
    files = _project_files()
    assert any(p.name == "conftest.py" for p in files)  # the walk really saw the tests
    offenders = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        depth = len(path.relative_to(ROOT).parts) - 1
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) or _climbs_out(line, depth):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_patterns_catch_what_they_are_for() -> None:
    assert OUTSIDE.search(f'REFERENCE = Path(__file__).parents[1] / "{_WORKBENCH}" / "x"')
    assert OUTSIDE.search(f"cat ../{_WORKBENCH}/reference/x.json")
    assert OUTSIDE.search("open('../../elsewhere/data.json')")
    assert _climbs_out('ROOT = Path(__file__).resolve().parents[2] / "x"', depth=1)
    assert _climbs_out("ROOT = Path(__file__).parent.parent.parent", depth=1)
    assert not _climbs_out('ROOT = Path(__file__).resolve().parents[1] / "x"', depth=1)
    assert not _climbs_out("REPO = Path(__file__).resolve().parent.parent", depth=1)
    assert not _climbs_out('DATA = Path(__file__).resolve().parent / "data"', depth=0)
