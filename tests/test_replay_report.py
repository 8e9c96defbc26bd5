"""The replay's report.html: what the committee reads must carry the summary's real figures,
stay offline (no scripts, nothing fetched), escape what comes from files, and never crash on a
thin or empty run."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from ipt_cds.replay.charts import number, ticks
from ipt_cds.replay.report import render
from ipt_cds.replay.source import Problems
from ipt_cds.replay.tally import InputFacts, Tally
from ipt_cds.replay.tally import summary as summarise

RUN = {"Engine": "local", "Input": "export/", "Duration": "12.3 s", "Site profile": "none"}
TITLES = {"ipt-suicide-risk": "Suicide risk: assess before IPT", "ipt-anxiety": "Anxiety"}


def _scenario(meaning: str, calls: int) -> dict[str, Any]:
    return {
        "meaning": meaning,
        "calls": calls,
        "answered": calls,
        "errors": {},
        "cards": 120,
        "cardsPer100": 44.94,
        "callsWithCards": 100,
        "withDepression": {"calls": 110, "cards": 95, "cardsPer100": 86.36},
        "indicators": {"critical": 5, "info": 100, "warning": 15},
        "cardsPerCall": {"0": 167, "1": 80, "2": 20},
        "verdicts": {"combine": 47, "not-applicable": 120, "suitable": 100},
        "rules": {
            "ipt-anxiety": {
                "cards": 100,
                "per100": 37.45,
                "indicators": {"info": 100},
                "silent": 3,
            },
            "ipt-suicide-risk": {
                "cards": 20,
                "per100": 7.49,
                "indicators": {"critical": 5, "warning": 15},
                "silent": 0,
            },
        },
        "together": [{"rules": ["ipt-anxiety", "ipt-suicide-risk"], "calls": 12}],
    }


def _summary() -> dict[str, Any]:
    return {
        "asOf": "2026-11-25",
        "patients": 267,
        "input": {
            "layout": "ndjson",
            "files": 8,
            "lines": 3000,
            "resources": {"Condition": 400, "Patient": 267},
            "problems": {
                "unparsable": {"count": 2, "first": ["Condition.ndjson:17", "Condition.ndjson:90"]},
                "withoutPatient": {"count": 1, "first": ["Observation.ndjson:5"]},
            },
            "skippedFiles": ["Claim.ndjson"],
        },
        "scenarios": {
            "patient-view": _scenario("chart opens", 267),
            "order-sign-ipt": _scenario("IPT orders signed", 267),
        },
    }


class _Checker(HTMLParser):
    """Collects the tags and fails on a closing tag that does not match the open one."""

    VOID = frozenset({"meta", "br", "rect", "line", "path"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack, tag
        assert self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _parsed(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    return checker


def _svgs(page: str) -> list[ET.Element]:
    # The page under test is our own output, not untrusted input.
    found = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(s) for s in found]  # noqa: S314


def test_report_carries_the_figures() -> None:
    page = render(_summary(), RUN, TITLES)
    assert "ipt-anxiety" in page
    assert "ipt-suicide-risk" in page
    assert "Suicide risk: assess before IPT" in page
    assert "7.49" in page
    assert "37.45" in page
    assert "Chart opens</strong>: 44.9 cards per 100 calls" in page
    assert "120 cards on 100 of 267 calls" in page
    assert "5 critical" in page
    assert "as of <strong>2026-11-25</strong>" in page
    assert "no once-per-visit memory" in page
    assert "Condition.ndjson:17" in page
    assert "Claim.ndjson" in page
    assert "12.3 s" in page
    # The scenario left out of the run is named as such, not silently dropped.
    assert "Not part of this run: Antidepressant (sertraline) orders signed" in page


def test_report_is_offline_and_well_formed() -> None:
    page = render(_summary(), RUN, TITLES)
    assert "<script" not in page.lower()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "<img" not in page
    checker = _parsed(page)
    # Firing rate, indicator mix and one cards-per-call histogram per scenario.
    svgs = _svgs(page)
    assert len(svgs) == 4 == checker.tags.count("svg")
    titles = [svg.findtext("{http://www.w3.org/2000/svg}title") for svg in svgs]
    assert titles[0] == "Cards per 100 calls, by rule and scenario"
    assert titles[1] == "Cards by indicator, per scenario"
    assert all(t and t.endswith("cards on one call") for t in titles[2:])


def test_charts_write_their_numbers() -> None:
    page = render(_summary(), RUN, TITLES)
    firing, mix, per_call = _svgs(page)[:3]
    texts = ["".join(t.itertext()) for t in firing.iter("{http://www.w3.org/2000/svg}text")]
    assert "7.49 · chart" in texts
    assert "37.45 · IPT order" in texts
    mix_text = " ".join("".join(t.itertext()) for t in mix.iter("{http://www.w3.org/2000/svg}text"))
    assert "info 100 · warning 15 · critical 5" in mix_text
    counts = {"".join(t.itertext()) for t in per_call.iter("{http://www.w3.org/2000/svg}text")}
    assert {"167", "80", "20"} <= counts


def test_rule_ids_titles_and_file_names_are_escaped() -> None:
    summary = _summary()
    rules = summary["scenarios"]["patient-view"]["rules"]
    rules["<b>bold</b>"] = rules.pop("ipt-anxiety")
    summary["scenarios"]["patient-view"]["together"] = [
        {"rules": ["<b>bold</b>", "ipt-suicide-risk"], "calls": 3}
    ]
    summary["input"]["skippedFiles"] = ["A&B.ndjson"]
    summary["input"]["problems"]["unparsable"]["first"] = ["x<y>&z.ndjson:1"]
    page = render(summary, {"Input": "<i>dir</i> & co"}, {"ipt-suicide-risk": "Risk <script>"})
    assert "<b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "A&amp;B.ndjson" in page
    assert "x&lt;y&gt;&amp;z.ndjson:1" in page
    assert "&lt;i&gt;dir&lt;/i&gt; &amp; co" in page
    assert "<script" not in page
    _parsed(page)
    assert len(_svgs(page)) == 4


def test_zero_patients_says_so() -> None:
    summary = _summary()
    summary["patients"] = 0
    # The summary a run with no patient writes, from the counter that writes it.
    empty = InputFacts("ndjson", 1, 0, {}, Problems(), [], 0)
    summary["scenarios"] = summarise(Tally(), empty, "2026-11-25", ["patient-view"])["scenarios"]
    page = render(summary, RUN, TITLES)
    assert "No patients were replayed" in page
    assert "no calls were made" in page
    assert "No rule showed a card" in page
    assert "No two rules fired together" in page
    _parsed(page)
    for svg in _svgs(page):
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"


def test_quiet_scenario_and_refused_calls() -> None:
    summary = _summary()
    quiet = summary["scenarios"]["order-sign-ipt"]
    quiet.update(
        cards=0,
        cardsPer100=0.0,
        callsWithCards=0,
        answered=260,
        errors={"timeout": 7},
        indicators={},
        cardsPerCall={"0": 260},
        rules={},
        together=[],
    )
    page = render(summary, RUN, TITLES)
    assert "IPT orders signed</strong>: 0.0 cards per 100 calls" in page
    assert "7 calls refused (timeout 7)" in page
    assert "none critical" in page
    assert "No two rules fired together" in page
    _parsed(page)
    assert len(_svgs(page)) == 4


def test_empty_summary_and_no_scenarios() -> None:
    page = render({}, {}, {})
    assert "No patients were replayed" in page
    assert "No rule showed a card in any scenario" in page
    _parsed(page)
    page = render({"patients": 3, "scenarios": {}}, RUN, {})
    assert "Not part of this run" in page
    assert page.count("Nothing to show: no scenario was replayed.") == 4


def test_hundreds_of_rules_keep_the_chart_readable() -> None:
    summary = _summary()
    rules = {
        f"rule-{i:03d}": {
            "cards": i,
            "per100": round(i / 2.67, 2),
            "indicators": {"info": i},
            "silent": 0,
        }
        for i in range(1, 301)
    }
    summary["scenarios"]["patient-view"]["rules"] = rules
    page = render(summary, RUN, TITLES)
    firing = _svgs(page)[0]
    labels = "".join(firing.itertext())
    assert "rule-300" in labels
    assert "rule-001" not in labels
    assert "The 40 most frequent of 302 rules" in page
    # Every rule still has its row in the tables.
    assert all(f"<code>rule-{i:03d}</code>" in page for i in range(1, 301))


def test_same_input_same_page() -> None:
    summary = _summary()
    first = render(summary, RUN, TITLES)
    assert render(copy.deepcopy(summary), dict(RUN), dict(TITLES)) == first
    assert summary == _summary()


@pytest.mark.parametrize(
    ("top", "expected"),
    [(0.0, [0.0, 1.0]), (7.49, [0.0, 2.0, 4.0, 6.0, 8.0]), (100.0, [0, 20, 40, 60, 80, 100])],
)
def test_axis_ticks_are_round(top: float, expected: list[float]) -> None:
    assert ticks(top) == expected


def test_numbers_read_as_the_summary_wrote_them() -> None:
    assert number(7.0) == "7"
    assert number(7.49) == "7.49"
    assert number(7.5) == "7.5"


def test_a_long_list_of_skipped_files_is_cut_with_its_count() -> None:
    summary = _summary()
    summary["input"]["skippedFiles"] = [f"Claim.{i}.ndjson" for i in range(20)]
    summary["input"]["skippedFileCount"] = 325
    page = render(summary, {}, {})
    assert "Claim.19.ndjson" in page
    assert "and 305 more" in page


def test_each_scenario_gives_its_rate_for_patients_with_depression() -> None:
    page = render(_summary(), RUN, TITLES)
    assert "for patients with a depressive disorder on record, 86.4 per 100 (110 calls)" in page
    assert "The order scenarios are what-ifs" in page


SVG = "{http://www.w3.org/2000/svg}"


def test_rule_labels_are_whole_wrapped_not_cut() -> None:
    long_title = (
        "IPT not recommended with psychotic features: refer for an urgent psychiatric "
        "assessment first"
    )
    page = render(_summary(), RUN, {**TITLES, "ipt-anxiety": long_title})
    firing = _svgs(page)[0]
    labels = [t for t in firing.iter(f"{SVG}text") if t.find(f"{SVG}tspan") is not None]
    shown = [" ".join(s.text or "" for s in t.iter(f"{SVG}tspan")) for t in labels]
    assert f"{long_title} (ipt-anxiety)" in shown
    assert "…" not in "".join(firing.itertext())
    wrapped = next(t for t in labels if "ipt-anxiety" in "".join(t.itertext()))
    lines = list(wrapped.iter(f"{SVG}tspan"))
    assert len(lines) >= 2
    assert all(len(line.text or "") <= 44 for line in lines)


def test_every_chart_spans_the_page() -> None:
    page = render(_summary(), RUN, TITLES)
    assert "svg { width: 100%; height: auto; }" in page
    widths = {svg.get("viewBox", "").split()[2] for svg in _svgs(page)}
    assert widths == {"860"}, "one canvas width, scaled to the page"


def test_the_site_profiles_effects_are_listed() -> None:
    site = ["rule ipt-suicide-risk: silent, snooze 30 days", "once per visit off: <x>"]
    page = render(_summary(), RUN, TITLES, site)
    assert "<h3>What the site profile changes</h3>" in page
    assert "<li>rule ipt-suicide-risk: silent, snooze 30 days</li>" in page
    assert "<li>once per visit off: &lt;x&gt;</li>" in page
    assert "The site profile changes nothing" in render(_summary(), RUN, TITLES, [])
    assert "site profile changes" not in render(_summary(), RUN, TITLES)
