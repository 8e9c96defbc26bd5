"""This machine has no Docker engine, so the container's promises are checked in the file."""

from __future__ import annotations

import re
import shlex
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LINES = [
    line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")
]


def _instructions(text: str) -> list[str]:
    """One string per instruction, continuation lines joined, comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append(pending + line)
        pending = ""
    assert not pending, "a continued line ends the file"
    return out


INSTRUCTIONS = _instructions(DOCKERFILE)
STAGES: list[list[str]] = []
for _instruction in INSTRUCTIONS:
    if _instruction.startswith("FROM "):
        STAGES.append([])
    STAGES[-1].append(_instruction)
BUILD, FINAL = STAGES[0], STAGES[-1]


def _runs(stage: list[str]) -> list[str]:
    return [i.removeprefix("RUN ") for i in stage if i.startswith("RUN ")]


def _pip_installs(stage: list[str]) -> list[list[str]]:
    """The arguments of every ``pip install`` in the stage's RUN commands."""
    found = []
    for run in _runs(stage):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for word in lexer:
            if word in ("&&", "||", ";", "|"):
                commands.append([])
            else:
                commands[-1].append(word)
        for words in commands:
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                found.append(words[words.index("install") + 1 :])
    return found


def _copies(stage: list[str]) -> list[list[str]]:
    return [shlex.split(i)[1:] for i in stage if i.startswith("COPY ")]


def test_base_image_is_slim_and_pinned() -> None:
    bases = [i for i in INSTRUCTIONS if i.startswith("FROM ")]
    assert len(bases) == 2, "a build stage and the image that runs"
    for base in bases:
        assert re.fullmatch(
            r"FROM python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?( AS \w+)?", base
        ), base
        assert ":latest" not in base
    assert bases[0].split()[1] == bases[1].split()[1], "both stages on the same Python"
    assert bases[0].endswith(" AS build")


def test_runs_as_a_non_root_user() -> None:
    users = [line for line in LINES if line.startswith("USER ")]
    assert users, "a USER instruction"
    assert users[-1].split()[1].split(":")[0] not in ("root", "0")
    assert LINES.index(users[-1]) > max(
        i for i, line in enumerate(LINES) if line.startswith("RUN ")
    )
    assert any("--uid 10001" in run for run in _runs(FINAL))


def test_healthcheck_calls_health() -> None:
    health = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK") :]
    assert "/health" in health.split("CMD", 2)[1]


def test_workers_and_port_come_from_the_environment() -> None:
    assert "IPT_CDS_WORKERS=" in DOCKERFILE
    assert "IPT_CDS_HOST=0.0.0.0" in DOCKERFILE
    # Listening beyond the container, it chooses authentication rather than leave it unset.
    assert "IPT_CDS_AUTH_MODE=required" in DOCKERFILE
    assert LINES[-1] == 'CMD ["ipt-cds", "serve"]'


def test_dependencies_install_from_the_lock_with_hashes() -> None:
    assert ["requirements.lock", "/tmp/requirements.lock"] in _copies(FINAL)
    installs = _pip_installs(FINAL)
    from_lock = [i for i in installs if "-r" in i]
    assert from_lock == [["--require-hashes", "-r", "/tmp/requirements.lock"]]
    assert "--no-deps" not in from_lock[0], "pip checks that the lock is complete"


def test_the_wheel_is_built_with_the_locked_build_tools() -> None:
    assert ["requirements-build.lock", "./"] in _copies(BUILD)
    assert _pip_installs(BUILD) == [["--require-hashes", "-r", "requirements-build.lock"]]
    (wheel,) = [r for r in _runs(BUILD) if r.startswith("pip wheel ")]
    # Without isolation pip builds with the setuptools from the lock, not one it downloads.
    assert "--no-build-isolation" in wheel.split()
    assert "--no-deps" in wheel.split()


def test_every_install_is_pinned_and_none_is_editable() -> None:
    for stage in STAGES:
        for args in _pip_installs(stage):
            assert "-e" not in args
            assert not any(a.startswith("--editable") for a in args)
            locked = "--require-hashes" in args
            own_wheel = {"--no-deps", "--no-index"} <= set(args) and args[-1].endswith(".whl")
            assert locked or own_wheel, args


def test_the_service_is_installed_from_its_wheel() -> None:
    copied = [c for c in _copies(FINAL) if c[0] == "--from=build"]
    assert copied == [["--from=build", "/wheels/", "/tmp/wheels/"]]
    wheel_installs = [i for i in _pip_installs(FINAL) if i[-1].endswith(".whl")]
    assert wheel_installs == [["--no-deps", "--no-index", "/tmp/wheels/ipt_cds-*.whl"]]
    # Dependencies first, so that a change to the code does not reinstall them.
    runs = _runs(FINAL)
    lock_run = next(i for i, r in enumerate(runs) if "requirements.lock" in r)
    wheel_run = next(i for i, r in enumerate(runs) if "ipt_cds-*.whl" in r)
    assert lock_run < wheel_run


def test_the_image_holds_the_knowledge_base_as_package_data() -> None:
    # The source tree goes into the build stage only; the image gets cards/ inside the wheel.
    assert ["ipt_cds", "./ipt_cds"] in _copies(BUILD)
    assert ["cards", "./cards"] in _copies(BUILD)
    sources = {c[0] for c in _copies(FINAL)}
    assert sources.isdisjoint({"ipt_cds", "cards", ".", "pyproject.toml"}), sources
    # The build fails if the installed package cannot load its knowledge base.
    assert any("Knowledge.load(Settings().knowledge_dir)" in r for r in _runs(FINAL))


DOCKERIGNORE = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in DOCKERIGNORE:
        for candidate in prefixes:
            if fnmatch(candidate, pattern):
                return True
            # "**/NAME" matches NAME at any depth.
            if pattern.startswith("**/") and fnmatch(candidate.split("/")[-1], pattern[3:]):
                return True
    return False


def test_dockerignore_keeps_out_what_the_image_does_not_need() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "cards/valuesets/sources/README.md",
        "tests/test_dockerfile.py",
        "fhir_fixtures/expected.json",
        "ipt_cds.egg-info/PKG-INFO",
        "build/lib/service/cli.py",
        "ipt_cds/__pycache__/cli.cpython-311.pyc",
        "ipt-cds.sqlite3",
    ):
        assert _ignored(path), path


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    copied = [c[0] for stage in STAGES for c in _copies(stage) if not c[0].startswith("--")]
    assert {"requirements.lock", "requirements-build.lock", "ipt_cds", "cards"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), source
    for path in ("cards/services.yaml", "cards/rules/ipt-suitable.yaml", "ipt_cds/cli.py"):
        assert not _ignored(path), path
