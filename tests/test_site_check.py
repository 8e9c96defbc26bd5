"""A site profile checked before go-live: ``ipt-cds site check FILE`` lists every problem in
plain words (a misspelt key gets "did you mean"), the safety rules are switched off or made
silent only with ``acknowledge_safety_rules_off: true`` (and then every start warns), and the
start-up log says in one line which profile loaded and what it changes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ipt_cds.cli import main
from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.site import SAFETY_RULES
from ipt_cds.ops.config import Settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["site", "check", str(path)])
    return code, capsys.readouterr().out.splitlines()


def test_site_check_lists_every_problem_a_line_each_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "organisation: Example Health\n"
        "ehr: epik\n"
        "rules:\n"
        "  ipt-cautions: {silnet: true, enabled: maybe}\n"
        "  ipt-cautoins: {enabled: false}\n",
    )
    code, lines = _check(path, capsys)
    assert code == 2
    assert all(line.startswith(f"{path}: ") for line in lines)
    by_field = {line.split(": ")[1]: line for line in lines}
    assert sorted(by_field) == [
        "ehr",
        "organisation",
        "rules.ipt-cautions.enabled",
        "rules.ipt-cautions.silnet",
        "rules.ipt-cautoins",
    ]
    assert "did you mean organization?" in by_field["organisation"]
    assert "did you mean epic?" in by_field["ehr"]
    assert "did you mean silent?" in by_field["rules.ipt-cautions.silnet"]
    assert "did you mean ipt-cautions?" in by_field["rules.ipt-cautoins"]
    assert "write true or false" in by_field["rules.ipt-cautions.enabled"]
    # Pydantic's own words are for programmers.
    assert not any("Extra inputs" in line or "Input should" in line for line in lines)


def test_start_up_refuses_with_the_first_problem_and_points_at_site_check(
    tmp_path: Path, settings: Settings
) -> None:
    path = _write(tmp_path, "organisation: Example Health\nehr: epik\n")
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(settings.knowledge_dir, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: organisation: no such setting; did you mean organization?")
    assert message.endswith(f"(and 1 more: `ipt-cds site check {path}` lists them)")


def test_site_check_passes_a_good_profile_and_says_what_it_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "organization: Example Health\nrepeat_window_hours: 0\n"
        "rules:\n  ipt-cautions: {silent: true}\n  ipt-chd: {snooze_days: 7}\n",
    )
    code, lines = _check(path, capsys)
    assert code == 0
    assert lines[0] == f"{path}: a valid site profile; it changes:"
    assert "  organization 'Example Health' at the start of every card's source" in lines
    assert "  once per visit off: a card may repeat at every call" in lines
    assert "  rule ipt-cautions: silent, snooze 30 days" in lines
    assert any(
        line.startswith(f"{path}: note: rules.ipt-chd: retired rule, replaced by ipt-cautions")
        for line in lines
    )


def test_site_check_of_a_missing_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _check(tmp_path / "nowhere.yaml", capsys)
    assert (code, lines) == (2, [f"{tmp_path / 'nowhere.yaml'}: file not found"])


@pytest.mark.parametrize("rule", SAFETY_RULES)
@pytest.mark.parametrize(
    ("control", "words"), [("enabled: false", "switched off"), ("silent: true", "made silent")]
)
def test_a_safety_rule_is_not_switched_off_or_silenced_without_acknowledgement(
    tmp_path: Path,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    rule: str,
    control: str,
    words: str,
) -> None:
    path = _write(tmp_path, f"rules:\n  {rule}: {{{control}}}\n")
    expected = (
        f"{path}: rules.{rule}: a safety rule cannot be {words} without "
        "`acknowledge_safety_rules_off: true`"
    )
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(settings.knowledge_dir, path)
    assert str(caught.value).startswith(expected)
    code, lines = _check(path, capsys)
    assert code == 2
    (line,) = lines
    assert line.startswith(expected)


def test_a_safety_rule_off_is_reported_beside_other_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "ehr: cerner\nrules:\n  ipt-suicide-risk: {enabled: false}\n")
    code, lines = _check(path, capsys)
    assert code == 2
    assert [line.split(": ")[1] for line in lines] == ["ehr", "rules.ipt-suicide-risk"]


def test_an_acknowledged_safety_rule_off_loads_and_warns_at_every_start(
    tmp_path: Path,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _write(
        tmp_path,
        "acknowledge_safety_rules_off: true\nrules:\n  ipt-suicide-risk: {silent: true}\n",
    )
    site = Knowledge.load(settings.knowledge_dir, path).site
    assert site.safety_rules_off() == {"ipt-suicide-risk": "silent"}
    code, lines = _check(path, capsys)
    assert code == 0
    assert f"{path}: WARNING: safety rule ipt-suicide-risk is silent" in lines[-1]
    for _ in range(2):  # each start, each worker
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ipt_cds"):
            create_app(settings.model_copy(update={"site_file": path}))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert [w for w in warnings if "SAFETY RULES OFF" in w] == [
            "SAFETY RULES OFF by the site profile (acknowledge_safety_rules_off: true): "
            "ipt-suicide-risk silent (its card: a suicide risk on record). Clinicians are not "
            "shown these cards"
        ]


@pytest.mark.parametrize(
    ("text", "summary"),
    [
        (
            None,
            "site profile: none (IPT_CDS_SITE_FILE unset): every rule shown, our links",
        ),
        ("# nothing yet\n", "site profile {path}: the defaults"),
        (
            "organization: Example Health\nehr: epic\n"
            "links:\n  crisis_line: {label: Our line, url: 'https://crisis.example.org'}\n"
            "rules:\n  ipt-no-depression: {enabled: false}\n",
            "site profile {path}: organization 'Example Health' at the start of every card's "
            "source; cards shaped for epic (docs/site-profile.md); links of the site: "
            "crisis_line; rule ipt-no-depression: disabled, snooze 30 days",
        ),
    ],
)
def test_the_start_up_log_says_in_one_line_which_profile_loaded(
    tmp_path: Path,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    text: str | None,
    summary: str,
) -> None:
    path = _write(tmp_path, text) if text is not None else None
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        create_app(settings.model_copy(update={"site_file": path}))
    lines = [r for r in caplog.records if getattr(r, "event", None) == "site-profile"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.INFO, summary.format(path=path))
    ]


def test_serve_refuses_a_safety_rule_off_in_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    path = _write(tmp_path, "rules:\n  ipt-psychosis: {enabled: false}\n")
    monkeypatch.setenv("IPT_CDS_SITE_FILE", str(path))
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ipt-cds: configuration: {path}: rules.ipt-psychosis: a safety rule")
    assert err.count("\n") == 1
    assert started == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("organization: [unclosed\n", "not valid YAML: line 2, column 1: "),
        ("- a list\n- not settings\n", "the file must hold settings as `name: value` lines"),
        ("rules: [ipt-cautions]\n", "rules: write settings here as `name: value` lines"),
        ("rules:\n  7: {enabled: false}\n", "rules[7]: a name here must be text"),
    ],
)
def test_a_file_that_is_not_a_profile_is_one_line_of_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    path = _write(tmp_path, text)
    code, lines = _check(path, capsys)
    assert code == 2
    assert lines[0].startswith(f"{path}: {said}")
