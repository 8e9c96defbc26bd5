"""The numbers the docs say a command prints are the ones it prints today: the commands are run
here, and their output compared with the docs' (times aside, which vary). A new fixture or a
changed rule that moves a count fails here until the docs say the new one."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipt_cds.cli import main

from .test_fixtures_check import BASE, FakeFhir

ROOT = Path(__file__).resolve().parents[1]
INTEGRATION = (ROOT / "docs" / "integration.md").read_text()
REPLAY = (ROOT / "docs" / "replay.md").read_text()
LOADED = re.compile(r"Loaded (\d+) of (\d+) patients \((\d+) resources\)")
SECONDS = re.compile(r" in [0-9.]+ s\b")


def _words(text: str) -> str:
    """Whitespace as one space (the docs wrap lines), and no durations."""
    return SECONDS.sub(" in N s", " ".join(text.split()))


def test_fixtures_list_counts_what_the_docs_say(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fixtures", "list"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    said = re.findall(r"`(\d+) fixtures`", INTEGRATION)
    assert said, "docs/integration.md says how many fixtures `list` shows"
    assert {f"{n} fixtures" for n in said} == {printed}


def test_fixtures_load_loads_what_the_docs_say(
    mocked: Callable[[FakeFhir], FakeFhir], capsys: pytest.CaptureFixture[str]
) -> None:
    mocked(FakeFhir())
    assert main(["fixtures", "load", "--fhir-server", BASE, "--quiet"]) == 0
    (printed,) = LOADED.findall(capsys.readouterr().out)
    said = LOADED.findall(INTEGRATION)
    assert len(said) >= 2, "sections 3 and 7 both quote it"
    assert set(said) == {printed}


def test_serve_sandbox_prints_the_links_the_docs_show(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    for name in ("IPT_CDS_HOST", "IPT_CDS_PORT", "IPT_CDS_SITE_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IPT_CDS_SANDBOX", "false")  # restored after the test
    monkeypatch.setenv("IPT_CDS_FHIR_ALLOWLIST", '["http://127.0.0.1:8091/fhir"]')
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert main(["serve", "--sandbox"]) == 0
    printed = [line.strip() for line in capsys.readouterr().err.splitlines()]
    block = INTEGRATION.split("It prints two links, ready to open:", 1)[1].split("```")[1]
    shown = [line.strip() for line in block.splitlines() if line.strip()]
    assert shown == printed


def test_the_replay_example_prints_what_the_docs_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = REPLAY.split("```sh\nipt-cds population synth", 1)[1].split("```", 1)[0]
    assert "--n 2000 --seed 7 --as-of 2026-11-30" in commands
    pop, out = tmp_path / "pop", tmp_path / "results"
    synth = ["population", "synth", "--n", "2000", "--seed", "7", "--as-of", "2026-11-30"]
    assert main([*synth, "--out", str(pop)]) == 0
    capsys.readouterr()
    assert main(["replay", str(pop), "--out", str(out), "--as-of", "2026-11-30"]) == 0
    printed = _words(capsys.readouterr().out)
    example = re.search(r"```\n(Replayed .*?)```", REPLAY, flags=re.S)
    assert example is not None, "docs/replay.md shows the paragraph replay prints"
    said = _words(example.group(1)).removesuffix(" ...")
    assert said.startswith("Replayed 2,000 patients")
    assert printed.startswith(said), f"docs: {said}\nprinted: {printed[: len(said) + 40]}"


@pytest.fixture
def mocked() -> Iterator[Callable[[FakeFhir], FakeFhir]]:
    """The fake FHIR server of tests/test_fixtures_check.py, on every request to its host."""
    import respx

    with respx.mock:

        def serve(fake: FakeFhir) -> FakeFhir:
            respx.route(host="fhir.test").mock(side_effect=fake.handle)
            return fake

        yield serve
