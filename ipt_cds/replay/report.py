"""The replay's ``report.html``: ``summary.json`` told in words, tables and charts for the CDS
committee (clinicians and informaticists) that decides whether to switch the cards on.

One self-contained page, no scripts and nothing fetched, so it opens offline, prints, and can
be passed around as a file. Rule ids, titles and file names come from files, so every string is
escaped; the summary holds counts only, so the page holds no patient data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

from ipt_cds.replay.charts import Series, grouped_hbars, histogram, number, stacked_hbars
from ipt_cds.replay.scenarios import SCENARIOS
from ipt_cds.replay.source import PROBLEMS

# Each scenario's short tag and colour in the charts, in the order a reader meets them.
LOOKS = {
    "patient-view": ("chart", "#3b6ea5"),
    "order-sign-ipt": ("IPT order", "#6a4c93"),
    "order-sign-antidepressant": ("sertraline", "#2a9d8f"),
}
INDICATORS = (("info", "#3b82c4"), ("warning", "#f0a202"), ("critical", "#c62828"))
VERDICTS = {
    "not-applicable": "no active depression on record",
    "not-recommended": "IPT not recommended (psychotic features)",
    "specialist": "for the specialist (bipolar disorder)",
    "not-adult": "not an adult",
    "combine": "IPT combined with an antidepressant",
    "antidepressant-preferred": "an antidepressant preferred",
    "suitable": "IPT suitable",
    "none": "no verdict given",
}
# More rules than this make the firing chart too tall to read; the tables keep them all.
CHART_RULES = 40
PAIRS = 15

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.45;
       max-width: 64rem; margin: 1.5rem auto; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1rem; margin-bottom: .3rem; }
.meta, .note { color: #555; }
.headline { background: #f4f7fb; border-left: 4px solid #3b6ea5; padding: .5rem 1rem; }
.alert { background: #fdecea; border-left: 4px solid #c62828; padding: .5rem 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { text-align: left; vertical-align: top; padding: .25rem .8rem .25rem 0;
         border-bottom: 1px solid #e2e2e2; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; }
.nw { white-space: nowrap; }
figure { margin: 1rem 0; overflow-x: auto; }
svg { width: 100%; height: auto; }
.critical { color: #a00000; font-weight: 600; }
@media print { body { max-width: none; } figure, table, .headline { break-inside: avoid; } }
"""


def _e(value: object) -> str:
    return escape(str(value))


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """Cells are HTML already escaped by the caller; ``numeric`` columns align right."""

    def cell(tag: str, i: int, content: str) -> str:
        return (
            f'<{tag} class="n">{content}</{tag}>' if i in numeric else f"<{tag}>{content}</{tag}>"
        )

    top = "".join(cell("th", i, _e(h)) for i, h in enumerate(head))
    top = f"<tr>{top}</tr>" if any(head) else ""
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table>{top}{body}</table></div>'


def _n(value: Any) -> str:
    """A count from the summary, forced to a number so nothing else reaches the page."""
    return str(int(value or 0))


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_e(k)} {_n(v)}" for k, v in counts.items()) or "—"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _places(problem: Mapping[str, Any]) -> str:
    return ", ".join(f"<code>{_e(w)}</code>" for w in problem.get("first", [])) or "—"


def _share(count: Any, of: Any) -> str:
    whole = int(_n(of))
    return f"{_n(count)} ({100 * int(_n(count)) / whole:.0f}%)" if whole else _n(count)


def _look(scenario: str) -> tuple[str, str]:
    """The short tag and the colour of a scenario's bars."""
    return LOOKS.get(scenario, (scenario, "#777777"))


class _Report:
    def __init__(self, summary: Mapping[str, Any], titles: Mapping[str, str]) -> None:
        self.summary = summary
        self.titles = titles
        self.scenarios: dict[str, Mapping[str, Any]] = dict(summary.get("scenarios") or {})

    def name(self, scenario: str) -> str:
        known = SCENARIOS.get(scenario)
        meaning = self.scenarios.get(scenario, {}).get("meaning") or (
            known.meaning if known else scenario
        )
        return str(meaning)[:1].upper() + str(meaning)[1:]

    def title(self, rule: str) -> str:
        return self.titles.get(rule) or rule

    def series(self) -> list[Series]:
        return [Series(self.name(s), *_look(s)) for s in self.scenarios]

    def each(self, part: Callable[[Mapping[str, Any]], str]) -> str:
        """One sub-section per scenario of the run."""
        return "".join(f"<h3>{_e(self.name(s))}</h3>{part(d)}" for s, d in self.scenarios.items())

    def headline(self) -> str:
        lines = [f"<li>{self.sentence(s, data)}</li>" for s, data in self.scenarios.items()]
        missing = [self.name(s) for s in SCENARIOS if s not in self.scenarios]
        text = f'<ul class="headline">{"".join(lines)}</ul>' if lines else ""
        if not self.summary.get("patients"):
            text = (
                '<p class="alert">No patients were replayed: the export held no usable Patient '
                "resource, so there is nothing to judge. See <em>Input</em> below.</p>" + text
            )
        if missing:
            text += f'<p class="note">Not part of this run: {_e("; ".join(missing))}.</p>'
        return text

    def sentence(self, scenario: str, d: Mapping[str, Any]) -> str:
        calls, answered = int(d.get("calls", 0)), int(d.get("answered", 0))
        name = _e(self.name(scenario))
        if not calls:
            return f"<strong>{name}</strong>: no calls were made."
        critical = int(d.get("indicators", {}).get("critical", 0))
        refused = calls - answered
        said = (
            f"<strong>{name}</strong>: {float(d.get('cardsPer100', 0)):.1f} cards per 100 calls "
            f"({_n(d.get('cards'))} cards on {_n(d.get('callsWithCards'))} of {answered} calls)"
        )
        flag = f'<span class="critical">{critical} critical</span>' if critical else "none critical"
        said += f"; {flag}"
        depressed = d.get("withDepression") or {}
        if depressed.get("calls"):
            said += (
                f"; for patients with a depressive disorder on record, "
                f"{float(depressed.get('cardsPer100', 0)):.1f} per 100 "
                f"({_n(depressed.get('calls'))} calls)"
            )
        if refused:
            said += f"; {refused} calls refused ({_counts(d.get('errors', {}))})"
        return said + "."

    def firing(self) -> str:
        rules = sorted({r for d in self.scenarios.values() for r in d.get("rules", {})})
        if not rules:
            return _note("No rule showed a card in any scenario.")

        def rates(rule: str) -> list[float]:
            return [
                float(d.get("rules", {}).get(rule, {}).get("per100", 0))
                for d in self.scenarios.values()
            ]

        ranked = sorted(rules, key=lambda r: (-max(rates(r)), r))
        shown = ranked[:CHART_RULES]
        svg = grouped_hbars(
            "Cards per 100 calls, by rule and scenario",
            "cards per 100 calls",
            [(f"{self.title(r)} ({r})" if r in self.titles else r, rates(r)) for r in shown],
            self.series(),
        )
        said = f"The {len(shown)} most frequent of {len(ranked)} rules; the tables list them all."
        return f"<figure>{svg}</figure>" + (_note(said) if len(ranked) > len(shown) else "")

    def indicator_mix(self) -> str:
        series = [Series(name, name, colour) for name, colour in INDICATORS]
        rows = [
            (self.name(s), [int(d.get("indicators", {}).get(n, 0)) for n, _ in INDICATORS])
            for s, d in self.scenarios.items()
        ]
        if not rows:
            return ""
        return f"<figure>{stacked_hbars('Cards by indicator, per scenario', rows, series)}</figure>"

    def per_call(self) -> str:
        parts = []
        for s, d in self.scenarios.items():
            seen = {int(k): int(v) for k, v in d.get("cardsPerCall", {}).items()}
            if not seen:
                parts.append(_note(f"{_e(self.name(s))}: no calls answered."))
                continue
            bins = [(str(k), seen.get(k, 0)) for k in range(max(seen) + 1)]
            colour = _look(s)[1]
            title = f"{self.name(s)}: cards on one call"
            parts.append(f"<figure>{histogram(title, 'cards on one call', bins, colour)}</figure>")
        return "".join(parts)

    def together(self) -> str:
        return self.each(self.pairs)

    def pairs(self, d: Mapping[str, Any]) -> str:
        pairs, answered = list(d.get("together", [])), int(d.get("answered", 0))
        if not pairs:
            return _note("No two rules fired together on one call.")
        top = max(int(p["calls"]) for p in pairs) or 1

        def row(pair: Mapping[str, Any]) -> list[str]:
            (a, b), n = pair["rules"], int(pair["calls"])
            # The count's shade grows with it, so the frequent pairs stand out in a long table.
            shade = f"background:rgba(198,40,40,{0.1 + 0.5 * n / top:.2f});padding:0 .4rem"
            share = f"{100 * n / answered:.1f}%" if answered else "—"
            count = f'<span style="{shade}">{n}</span>'
            return [self.rule_cell(a), self.rule_cell(b), count, share]

        rows = [row(p) for p in pairs[:PAIRS]]
        more = _note(f"and {len(pairs) - PAIRS} more pairs.") if len(pairs) > PAIRS else ""
        return _table(["Rule", "with rule", "calls", "of calls"], rows, {2, 3}) + more

    def rule_cell(self, rule: str) -> str:
        return f"{_e(self.title(rule))}<br><code>{_e(rule)}</code>"

    def rule_tables(self) -> str:
        return self.each(self.rule_table)

    def rule_table(self, d: Mapping[str, Any]) -> str:
        rules: Mapping[str, Mapping[str, Any]] = d.get("rules", {})
        if not rules:
            return _note("No rule showed a card.")
        order = sorted(rules, key=lambda r: (-int(rules[r].get("cards", 0)), r))
        rows = [self.rule_row(r, rules[r]) for r in order]
        head = ["Rule", "id", "cards", "per 100 calls", "indicators", "silent"]
        return _table(head, rows, {2, 3, 5})

    def rule_row(self, rule: str, e: Mapping[str, Any]) -> list[str]:
        cells = [_e(self.title(rule)), f"<code>{_e(rule)}</code>", _n(e.get("cards"))]
        per100 = number(float(e.get("per100", 0)))
        return [*cells, per100, _counts(e.get("indicators", {})), _n(e.get("silent"))]

    def verdicts(self) -> str:
        names = sorted({v for d in self.scenarios.values() for v in d.get("verdicts", {})})
        if not names:
            return _note("No call was answered, so no verdicts.")
        head = ["Verdict", "meaning", *(self.name(s) for s in self.scenarios)]
        rows = [
            [f'<code class="nw">{_e(v)}</code>', _e(VERDICTS.get(v, ""))]
            + [
                _share(d.get("verdicts", {}).get(v), d.get("answered"))
                for d in self.scenarios.values()
            ]
            for v in names
        ]
        return _table(head, rows, set(range(2, len(head))))

    def input(self) -> str:
        data: Mapping[str, Any] = self.summary.get("input") or {}
        facts = [
            ("Patients replayed", _n(self.summary.get("patients"))),
            ("Layout", _e(data.get("layout", "—"))),
            ("Files read", _n(data.get("files"))),
            ("Lines or entries read", _n(data.get("lines"))),
        ]
        resources = [[_e(k), _n(v)] for k, v in data.get("resources", {}).items()]
        problems = [
            [f"{_e(PROBLEMS.get(k, k))} <code>{_e(k)}</code>", _n(p.get("count")), _places(p)]
            for k, p in data.get("problems", {}).items()
        ]
        listed = data.get("skippedFiles", [])
        skipped = "".join(f"<li><code>{_e(f)}</code></li>" for f in listed)
        more = data.get("skippedFileCount", len(listed)) - len(listed)
        skipped += f"<li>and {_n(more)} more</li>" if more > 0 else ""
        return (
            _table(["", ""], facts, {1})
            + "<h3>Resources by type</h3>"
            + (_table(["Type", "count"], resources, {1}) if resources else _note("None."))
            + "<h3>Problems</h3>"
            + (_table(["Problem", "count", "first seen at"], problems, {1}) if problems else "")
            + ("" if problems else _note("None: every line was read."))
            + "<h3>Files skipped</h3>"
            + (f"<ul>{skipped}</ul>" if skipped else _note("None."))
        )


def _site(effects: Sequence[str] | None) -> str:
    """What the site profile of the run changes: the committee judges the profile it means to
    switch on, so the page says which rules it silenced or switched off."""
    if effects is None:
        return ""
    if not effects:
        return _note("The site profile changes nothing: every rule on, nothing silent.")
    items = "".join(f"<li>{_e(line)}</li>" for line in effects)
    return f"<h3>What the site profile changes</h3><ul>{items}</ul>"


def _about(summary: Mapping[str, Any], run: Mapping[str, str], site: Sequence[str] | None) -> str:
    as_of = summary.get("asOf")
    when = f"<li>Every patient was evaluated as of <strong>{_e(as_of)}</strong>: ages, "
    when += "lookbacks and recency were judged on that date.</li>"
    return (
        _table(["", ""], [[_e(k), _e(v)] for k, v in run.items()], set())
        + _site(site)
        + '<ul class="note">'
        + (when if as_of else "")
        + "<li>Each call stands alone: the replay has no once-per-visit memory, so a card an "
        "EHR would show once per visit is counted on every call.</li>"
        "<li>The order scenarios are what-ifs: <strong>every</strong> patient, with "
        "depression or not, gets one IPT order and one sertraline order. Real orders go mostly "
        "to patients with depression, so the rate for patients with a depressive disorder on "
        "record is the closer guide to what prescribers would see. A critical card (suicide "
        "risk) shows on every hook, so the same patients count in each scenario.</li>"
        "<li><em>Per 100 calls</em> counts answered calls; refused calls are listed apart.</li>"
        "<li><em>Silent</em>: cards the site profile switched off, that would have shown.</li>"
        "<li>The report holds counts only: no patient is named, and a Bundle file is named by "
        "its number in name order.</li></ul>"
    )


def render(
    summary: dict[str, Any],
    run: Mapping[str, str],
    titles: Mapping[str, str],
    site: Sequence[str] | None = None,
) -> str:
    """The whole ``report.html`` page for one replay's ``summary.json``; ``site``, the lines
    saying what the run's site profile changes (``ipt_cds/knowledge/site_summary.py``)."""
    r = _Report(summary, titles)
    sections = [
        ("In short", r.headline()),
        ("About this run", _about(summary, run, site)),
        ("How often each rule fires", r.firing()),
        ("Indicator mix", r.indicator_mix()),
        ("Cards on one call", r.per_call()),
        ("Rules that fire together", r.together()),
        ("Rules, scenario by scenario", r.rule_tables()),
        ("Verdicts", r.verdicts()),
        ("Input", r.input()),
    ]
    as_of = f", as of {_e(summary['asOf'])}" if summary.get("asOf") else ""
    # With no scenario in the run a section would stand empty: say why instead.
    empty = _note("Nothing to show: no scenario was replayed.")
    body = "".join(f"<section><h2>{_e(h)}</h2>{c or empty}</section>" for h, c in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Replay report</title><style>{CSS}</style></head><body>"
        "<h1>Replay report: what the cards would have shown</h1>"
        f'<p class="meta">{_n(summary.get("patients"))} patients replayed{as_of}.</p>'
        f"{body}</body></html>\n"
    )
