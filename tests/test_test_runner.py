"""scripts/test names some test files itself (the serial pass, the modules --quick does not
import): those names must stay true as tests move."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (ROOT / "scripts" / "test").read_text()


def _modules_marked(mark: str) -> set[str]:
    found = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        text = path.read_text()
        if re.search(rf"^pytestmark = .*pytest\.mark\.{mark}\b", text, re.MULTILINE):
            found.add(path.relative_to(ROOT).as_posix())
    return found


def test_the_serial_pass_runs_every_module_marked_serial() -> None:
    serial = _modules_marked("serial")
    assert serial == {"tests/test_fuzz.py"}
    named = set(re.findall(r"-m serial (tests/\S+\.py)", SCRIPT))
    assert named == serial
    # No single test is marked serial outside those modules.
    marker = re.compile(r"@pytest\.mark\.serial\b")
    for path in (ROOT / "tests").rglob("test_*.py"):
        assert not marker.search(path.read_text()), path


def test_quick_skips_importing_only_modules_that_are_slow_throughout() -> None:
    ignored = set(re.findall(r"--ignore=(tests/test_\w+\.py)", SCRIPT))
    assert ignored, "scripts/test --quick leaves some modules out"
    assert ignored <= _modules_marked("slow")
