"""The site profile the benchmarks run with: once per visit off.

The benchmarks call the same few patients thousands of times; with the repeat window on, every
call after the first would hold most cards back and measure less work than a real call does.
The memory is still read on every call (one indexed query), so its cost is measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def no_repeat_site() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ipt-bench-site-")) / "site.yaml"
    path.write_text("repeat_window_hours: 0\n")
    return path
