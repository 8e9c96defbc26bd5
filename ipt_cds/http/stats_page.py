"""``GET /stats``: the card statistics as a page an operator or a CDS committee reads: per rule
what was shown, accepted, overridden, held back and computed silently; the override reasons;
and the same by day. Charts are inline SVG drawn here, with the numbers beside them in tables;
no script, no external resource. The same access as ``/stats/cards`` (the operator's token, or
a client JWT when authentication is required) and the same ``?since=`` and ``?until=``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse, Response

from ipt_cds.http.evidence import templates
from ipt_cds.http.routes import authenticate_operator, state_of
from ipt_cds.http.statistics import read_statistics, stats_window
from ipt_cds.protocol.models import CardStats

# (what, colour): colours that stay apart for the common colour-vision deficiencies.
SERIES = (
    ("shown", "#0072b2"),
    ("accepted", "#009e73"),
    ("overridden", "#d55e00"),
    ("held back", "#999999"),
    ("silent", "#cc79a7"),
)
BAR, GAP, LABEL_WIDTH, CHART_WIDTH = 9, 8, 210, 760
# The most days the day chart draws (the latest); the table below it lists them all.
MAX_DAYS = 92
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter()


@router.get(
    "/stats",
    summary="The card statistics as an HTML page with charts",
    response_class=HTMLResponse,
    responses={401: {}, 400: {}, 503: {}},
)
async def stats_page(request: Request) -> Response:
    await authenticate_operator(request)
    since, until = stats_window(request, blank_is_absent=True)
    stats, days = await read_statistics(state_of(request), since, until, days=True)
    rules = rule_rows(stats)
    reasons = reason_rows(stats)
    by_day = day_rows(days)
    html = (
        templates()
        .get_template("stats.html")
        .render(
            window=_window_text(since, until),
            since=since.date().isoformat() if since else "",
            until=until.date().isoformat() if until else "",
            series=SERIES,
            rules=rules,
            rules_chart=horizontal_bars(rules),
            reasons=reasons,
            reasons_chart=horizontal_bars([(r, [0, 0, n, 0, 0]) for r, n in reasons]),
            days=by_day,
            days_chart=columns(by_day[-MAX_DAYS:]),
        )
    )
    return HTMLResponse(html, headers=HEADERS)


def rule_rows(stats: CardStats) -> list[tuple[str, list[int]]]:
    """(service · rule, counts in SERIES order)."""
    return [
        (
            f"{service.service} · {rule.rule}",
            [
                rule.shown,
                rule.accepted,
                rule.overridden,
                rule.suppressedAsRepeat + rule.suppressedBySnooze,
                rule.silent,
            ],
        )
        for service in stats.services
        for rule in service.rules
    ]


def reason_rows(stats: CardStats) -> list[tuple[str, int]]:
    """Override reasons over every rule, most given first."""
    counts: Counter[str] = Counter()
    for service in stats.services:
        for rule in service.rules:
            for reason in rule.overrideReasons or []:
                counts[reason.display or reason.code] += reason.count
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def day_rows(
    days: Sequence[tuple[str, str, int]], today: date | None = None
) -> list[tuple[str, list[int]]]:
    """(day, counts in SERIES order): each day with something, and the empty days between those
    of the MAX_DAYS the chart draws, which end at the latest day not after ``today``. Only
    there: feedback is dated by the EHR's outcomeTimestamp, and one stamped in year 1 (or 9999)
    must add a row, not 700,000, nor move the chart away from the days that matter."""
    index = {name: i for i, (name, _) in enumerate(SERIES)}
    counts: dict[str, list[int]] = {}
    for day, kind, n in days:
        if kind in index:
            counts.setdefault(day, [0] * len(SERIES))[index[kind]] += n
    if not counts:
        return []
    until = (today or datetime.now(UTC).date()).isoformat()
    recent = [day for day in counts if day <= until] or list(counts)
    last = date.fromisoformat(max(recent))
    # date.min + MAX_DAYS: the window of a day in year 1 must not step before the calendar.
    start = last - timedelta(days=MAX_DAYS - 1) if last.toordinal() > MAX_DAYS else date.min
    first = date.fromisoformat(min(day for day in recent if day >= start.isoformat()))
    shown = set(counts)
    shown.update((first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1))
    return [(day, counts.get(day, [0] * len(SERIES))) for day in sorted(shown)]


def horizontal_bars(rows: Sequence[tuple[str, Sequence[int]]]) -> Markup:
    """One group of bars per row (a bar per series that is not zero), labelled, to scale."""
    if not rows:
        return Markup("")
    top = max((max(values) for _, values in rows), default=0) or 1
    scale = (CHART_WIDTH - LABEL_WIDTH - 60) / top
    parts, y = [], 0
    for label, values in rows:
        shown = [(i, v) for i, v in enumerate(values) if v]
        height = max(len(shown), 1) * BAR
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + height / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(_cut(label, 34))}</text>"
        )
        for row, (i, value) in enumerate(shown):
            name, colour = SERIES[i]
            width = max(value * scale, 1)
            top_y = y + row * BAR
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{top_y}" width="{width:.1f}" height="{BAR - 1}" '
                f'fill="{colour}"><title>{escape(label)}: {value} {name}</title></rect>'
                f'<text x="{LABEL_WIDTH + width + 4:.1f}" y="{top_y + BAR - 1}" '
                f'class="n">{value}</text>'
            )
        y += height + GAP
    return _svg(CHART_WIDTH, y, parts)


def columns(rows: Sequence[tuple[str, Sequence[int]]]) -> Markup:
    """Per day, a column per series side by side; the first day of each month labelled."""
    if not rows:
        return Markup("")
    height, base = 180, 160
    top = max((max(values) for _, values in rows), default=0) or 1
    step = max((CHART_WIDTH - 40) / len(rows), 3.0)
    bar = max(step / (len(SERIES) + 1), 0.5)
    parts = [f'<text x="0" y="10" class="n">{top}</text>']
    for n, (day, values) in enumerate(rows):
        x0 = 40 + n * step
        for i, value in enumerate(values):
            if value:
                h = value / top * (base - 14)
                name, colour = SERIES[i]
                parts.append(
                    f'<rect x="{x0 + i * bar:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{day}: {value} {name}</title>'
                    "</rect>"
                )
        if n == 0 or day.endswith("-01"):
            parts.append(f'<text x="{x0:.1f}" y="{height - 4}" class="n">{day}</text>')
    parts.append(f'<line x1="38" y1="{base}" x2="{CHART_WIDTH}" y2="{base}" stroke="#888"/>')
    return _svg(CHART_WIDTH, height, parts)


def _svg(width: float, height: float, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(  # noqa: S704 - every text in ``parts`` is escaped where it is made
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="100%" '
        f'viewBox="0 0 {width} {height:.0f}" font-size="11">{body}</svg>'
    )


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _window_text(since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return "everything the database holds"
    start = since.isoformat(timespec="minutes") if since else "the first record"
    end = until.isoformat(timespec="minutes") if until else "now"
    return f"from {start} to {end} (UTC)"
