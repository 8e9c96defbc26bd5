"""A progress bar for long terminal commands: one line redrawn in place, only on a terminal."""

from __future__ import annotations

from typing import TextIO


class ProgressBar:
    WIDTH = 30

    def __init__(self, out: TextIO, total: int, shown: bool, unit: str = "patients") -> None:
        self.out, self.total, self.shown, self.unit = out, max(total, 1), shown, unit
        self._drawn = 0

    def show(self, done: int, note: str = "") -> None:
        if self.shown:
            filled = self.WIDTH * min(done, self.total) // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"\r[{bar}] {done}/{self.total} {self.unit}{note}"
            self.out.write(line.ljust(self._drawn))
            self._drawn = len(line)
            self.out.flush()

    def clear(self) -> None:
        if self.shown and self._drawn:
            self.out.write("\r" + " " * self._drawn + "\r")
            self.out.flush()
            self._drawn = 0
