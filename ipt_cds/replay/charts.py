"""Inline SVG charts for the replay report, drawn by hand so the page needs no plotting library
and opens offline: a committee member may read it from an e-mail attachment or on paper.

Every bar carries its number and every colour is named in text beside it, so the charts read
in black and white and for readers who do not tell the colours apart. Every chart is drawn
``CANVAS`` units wide and the page scales it to its full width; labels are never cut, long ones
wrap onto more lines.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'
INK = "#1b1b1b"
GRID = "#d9d9d9"
# The width every chart is drawn to, in SVG units; the report's CSS scales it to the page.
CANVAS = 860.0
# A label wraps at this many characters; its column is as wide as its longest line needs,
# at most a third of the chart, so the bars keep room.
LABEL_CHARS = 44
# The width of a character of the 12-unit font, on average, to size the label column.
CHAR_WIDTH = 6.4
LINE = 14.0


@dataclass(frozen=True)
class Series:
    """One colour in a chart: ``tag`` is the short text written beside each of its bars."""

    name: str
    tag: str
    colour: str


def number(value: float) -> str:
    """Counts as integers, rates with at most two decimals, as ``summary.json`` rounds them."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def ticks(top: float) -> list[float]:
    """About five round steps (1, 2 or 5 times a power of ten) from zero past ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _text(x: float, y: float, content: str, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" {extra}>{escape(content)}</text>'


def _rect(x: float, y: float, w: float, h: float, colour: str, tip: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
        f'fill="{colour}"><title>{escape(tip)}</title></rect>'
    )


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" {FONT} font-size="12" '
        # Shrinks with a narrow window down to where the text still reads, then scrolls.
        f'style="min-width: {min(0.75 * width, 620):.0f}px" '
        f'fill="{INK}"><title>{escape(title)}</title>'
    )
    heading = _text(0, 16, title, 'font-size="15" font-weight="600"')
    return "".join([head, heading, *body, "</svg>"])


def _legend(series: Sequence[Series], y: float) -> list[str]:
    parts, x = [], 0.0
    for s in series:
        parts.append(_rect(x, y - 10, 12, 12, s.colour, s.name))
        parts.append(_text(x + 16, y, s.name))
        x += 24 + 7 * len(s.name)
    return parts


def _lines(label: str) -> list[str]:
    """The label on as many lines as it takes, none longer than ``LABEL_CHARS``."""
    return textwrap.wrap(label, LABEL_CHARS, break_on_hyphens=False) or [""]


def _label(x: float, middle: float, lines: list[str], whole: str) -> str:
    """Right-aligned lines centred on ``middle``; the whole label as its tooltip."""
    first = middle + 4 - LINE * (len(lines) - 1) / 2
    spans = "".join(
        f'<tspan x="{x:.1f}" y="{first + i * LINE:.1f}">{escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return f'<text text-anchor="end"><title>{escape(whole)}</title>{spans}</text>'


def grouped_hbars(
    title: str, axis: str, groups: Sequence[tuple[str, Sequence[float]]], series: Sequence[Series]
) -> str:
    """One group of horizontal bars per label (a rule), one bar per series (a scenario)."""
    wrapped = [_lines(label) for label, _ in groups]
    widest = max((len(line) for lines in wrapped for line in lines), default=0)
    right, bar, top = 140.0, 14.0, 50.0
    left = min(CANVAS / 3, 16 + CHAR_WIDTH * widest)
    plot = CANVAS - left - right
    scale = ticks(max((v for _, values in groups for v in values), default=0.0))
    step = plot / scale[-1]
    body = _legend(series, 38)
    heights = [max(bar * len(series), LINE * len(lines)) + 12 for lines in wrapped]
    bottom = top + sum(heights)
    for t in scale:
        x = left + t * step
        body.append(
            f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{GRID}"/>'
        )
        body.append(_text(x, bottom + 14, number(t), 'text-anchor="middle"'))
    y = top
    for (label, values), lines, height in zip(groups, wrapped, heights, strict=True):
        middle = y + height / 2
        body.append(_label(left - 8, middle, lines, label))
        first = middle - bar * len(series) / 2
        for j, (s, v) in enumerate(zip(series, values, strict=True)):
            tip = f"{label}, {s.name}: {number(v)}"
            body.append(_rect(left, first + j * bar, v * step, bar - 2, s.colour, tip))
            body.append(
                _text(
                    left + v * step + 4,
                    first + j * bar + 10,
                    f"{number(v)} · {s.tag}",
                    'font-size="11"',
                )
            )
        y += height
    body.append(_text(left + plot / 2, bottom + 32, axis, 'text-anchor="middle"'))
    return _svg(CANVAS, bottom + 42, title, body)


def stacked_hbars(
    title: str, rows: Sequence[tuple[str, Sequence[int]]], series: Sequence[Series]
) -> str:
    """One bar per label, cut into the series' counts; the counts are written under each bar."""
    # The label goes above its bar so that long scenario names need no cutting.
    plot, bar, block, top = CANVAS - 90, 22.0, 66.0, 50.0
    widest = max((sum(values) for _, values in rows), default=0) or 1
    step = plot / widest
    body = _legend(series, 38)
    for i, (label, values) in enumerate(rows):
        y = top + i * block + 18
        body.append(_text(0, y - 5, label, 'font-weight="600"'))
        x = 0.0
        for s, v in zip(series, values, strict=True):
            body.append(_rect(x, y, v * step, bar, s.colour, f"{label}, {s.name}: {v}"))
            x += v * step
        total = sum(values)
        said = " · ".join(f"{s.name} {v}" for s, v in zip(series, values, strict=True))
        body.append(_text(x + 6, y + 15, f"{total} cards"))
        body.append(_text(0, y + bar + 15, said if total else "no cards", 'font-size="11"'))
    return _svg(CANVAS, top + block * len(rows), title, body)


def histogram(title: str, axis: str, counts: Sequence[tuple[str, int]], colour: str) -> str:
    """Vertical bars, one per bin, each with its count on top."""
    left, plot_h, top, gap = 56.0, 150.0, 56.0, 6.0
    # As wide as the chart allows, up to a bar a reader still sees as one bin.
    width = max(20.0, min(90.0, (CANVAS - left - 20) / max(len(counts), 1) - gap))
    scale = ticks(max((v for _, v in counts), default=0))
    step = plot_h / scale[-1]
    base = top + plot_h
    body: list[str] = []
    for t in scale:
        y = base - t * step
        body.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + len(counts) * (width + gap):.1f}"'
            f' y2="{y:.1f}" stroke="{GRID}"/>'
        )
        body.append(_text(left - 6, y + 4, number(t), 'text-anchor="end"'))
    for i, (label, v) in enumerate(counts):
        x = left + i * (width + gap) + gap / 2
        body.append(_rect(x, base - v * step, width, v * step, colour, f"{label}: {v} calls"))
        body.append(_text(x + width / 2, base - v * step - 4, str(v), 'text-anchor="middle"'))
        body.append(_text(x + width / 2, base + 15, label, 'text-anchor="middle"'))
    right = left + len(counts) * (width + gap)
    body.append(_text((left + right) / 2, base + 34, axis, 'text-anchor="middle"'))
    body.append(
        _text(
            14,
            top + plot_h / 2,
            "calls",
            f'text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2:.1f})"',
        )
    )
    return _svg(max(CANVAS, right + 20), base + 44, title, body)
