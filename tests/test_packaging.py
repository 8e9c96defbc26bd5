"""The service as a deployment gets it: a wheel, installed away from the checkout, pinned by the
lock files, and a package whose import does nothing but define things."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import NOW

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "cards"
FIXTURES = ROOT / "fhir_fixtures"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# A fixture request with full prefetch, answered with two cards (fhir_fixtures/expected.json).
# Knowledge v2: in-addpharm-phq9-15 now answers one card, as ipt-suitable is only ever the lone
# all-clear (v1 added it beside ipt-add-pharmacotherapy); so the case is PHQ-9 12 with item 9 = 2:
# ipt-suicide-risk (critical) and ipt-add-pharmacotherapy (warning). Its request carries every
# prefetch key, medicationStatements included, so the call needs no FHIR read.
CASE = "in-addpharm-item9-2-ideation"
DIST_INFO = f"ipt_cds-{PYPROJECT['project']['version']}.dist-info"


def _clean_env() -> dict[str, str]:
    """The environment without settings or Python variables that could point elsewhere."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IPT_CDS_", "PYTHON")) or k == "PYTHONHASHSEED"
    }


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of what the Dockerfile copies: pip builds in the
    source tree, and the checkout's build/ could hold files since deleted."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ipt_cds", "cards"):  # cards/ with valuesets/sources/, which must stay out
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out)]
    built = _run([*pip, str(src)], cwd=src)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("ipt_cds-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a folder of its own (not a venv: the dependencies are .venv's)."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    done = _run([*pip, "--target", str(target), str(wheel)], cwd=target)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """The wheel holds only the packages pyproject lists by hand: a new folder of Python left out
    would be missing from every installed service. Checked here without building the wheel."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "ipt_cds").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= listed, f"not listed in pyproject.toml: {sorted(on_disk - listed)}"


# A module holds one subject (docs/architecture.md, Checks): a file past this holds more.
MOST_LINES = 600


def test_no_python_file_of_the_repository_is_over_600_lines() -> None:
    folders = ("ipt_cds", "tests", "benchmarks", "scripts")
    long = {
        path.relative_to(ROOT).as_posix(): lines
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MOST_LINES
    }
    assert long == {}, "split these by subject"


@pytest.mark.slow  # builds the wheel
def test_the_wheel_holds_the_package_and_the_knowledge_base(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    rules = sorted(p.name for p in (CARDS / "rules").glob("*.yaml"))
    valuesets = sorted(p.name for p in (CARDS / "valuesets").glob("*.json"))
    examples = sorted(p.name for p in (CARDS / "examples").glob("*.json"))
    assert rules, "the checkout has rules"
    assert examples, "the checkout has the evidence pages' example cards"
    assert valuesets, "the checkout has value sets"
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ipt_cds").rglob("*.py")]
    templates = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ipt_cds").rglob("*.html")]
    assert templates, "the checkout has the evidence pages' templates"
    expected = {
        "ipt_cds/py.typed",
        "ipt_cds/cards/__init__.py",
        "ipt_cds/cards/services.yaml",
        "ipt_cds/cards/parameters.yaml",
        "ipt_cds/cards/facts.yaml",
        *(f"ipt_cds/cards/rules/{name}" for name in rules),
        *(f"ipt_cds/cards/valuesets/{name}" for name in valuesets),
        *(f"ipt_cds/cards/examples/{name}" for name in examples),
        *modules,  # every subpackage is listed in [tool.setuptools] packages
        *templates,  # package data of ipt_cds.http
    }
    assert sorted(expected - names) == []


@pytest.mark.slow  # builds the wheel
def test_the_wheel_leaves_out_build_inputs_tests_and_fixtures(wheel: Path) -> None:
    assert any((CARDS / "valuesets" / "sources").rglob("*.*")), "there is something to leave out"
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if "valuesets/sources/" in n] == []
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
    tops = {n.split("/")[0] for n in names}
    assert tops == {"ipt_cds", DIST_INFO}, "no tests/, fhir_fixtures/, cards/ at the top"


@pytest.mark.slow  # builds the wheel
def test_the_wheel_declares_the_command(wheel: Path) -> None:
    entry_points = zipfile.ZipFile(wheel).read(f"{DIST_INFO}/entry_points.txt")
    assert re.search(r"^ipt-cds = ipt_cds\.cli:main$", entry_points.decode(), re.M)


# Run in a fresh interpreter, in a folder outside the checkout, with the installed wheel first on
# sys.path: loads the default knowledge base and answers one fixture request through the
# pipeline, with a FHIR client that fails the test if it is used.
INSTALLED_CALL = """
import asyncio, json, sys
from datetime import datetime
from pathlib import Path

target, request_file, service_id, now, report = sys.argv[1:]
sys.path.insert(0, target)

import httpx

import ipt_cds
from ipt_cds.fhir.client import FhirClient
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.pipeline import Pipeline

settings = Settings()
knowledge = Knowledge.load(settings.knowledge_dir)
pipeline = Pipeline(knowledge)


def refuse(request):
    raise AssertionError(f"the full prefetch should need no FHIR call: {request.url}")


async def call():
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        return await pipeline.run(
            knowledge.services[service_id],
            json.loads(Path(request_file).read_text()),
            fhir=FhirClient(http, settings),
            fhir_allowed=lambda url: False,
            now=datetime.fromisoformat(now),
        )


result = asyncio.run(call())
cards = [card.model_dump(mode="json") for card in result.cards]
modules = sorted(
    m.__file__
    for name, m in sys.modules.items()
    if name.split(".")[0] == "ipt_cds" and getattr(m, "__file__", None)
)
Path(report).write_text(json.dumps({
    "package": ipt_cds.__file__,
    "knowledge_dir": str(settings.knowledge_dir),
    "modules": modules,
    "cards": {c["source"]["topic"]["code"]: c["indicator"] for c in cards},
}))
"""


@pytest.mark.slow  # builds the wheel
def test_the_installed_wheel_answers_cards_from_another_folder(
    installed: Path, tmp_path: Path
) -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())[CASE]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = tmp_path / "report.json"
    args = [str(installed), str(FIXTURES / "requests" / f"{CASE}.json")]
    args += [expected["service"], NOW.isoformat(), str(report)]
    done = _run([sys.executable, "-I", "-c", INSTALLED_CALL, *args], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(report.read_text())
    site = installed.resolve()
    assert Path(found["package"]).resolve().is_relative_to(site), found["package"]
    assert Path(found["knowledge_dir"]).resolve() == site / "ipt_cds" / "cards"
    assert [m for m in found["modules"] if not Path(m).resolve().is_relative_to(site)] == []
    assert found["cards"] == expected["cards"]
    assert len(expected["cards"]) >= 2


# Imports every module of the package in a fresh interpreter (in an empty folder, every warning
# shown) and reports what the imports changed in the process.
IMPORT_EVERYTHING = """
import asyncio, gc, json, logging, os, sys, threading
from pathlib import Path

report = sys.argv[1]
threshold = gc.get_threshold()
threads = threading.active_count()
records = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append(f"{record.name} {record.levelname}: {record.getMessage()}")


keep = Keep()
logging.root.addHandler(keep)
logging.root.setLevel(logging.NOTSET)

import importlib, pkgutil

import ipt_cds


def fail(name):
    raise ImportError(name)


names = ["ipt_cds"] + [
    m.name for m in pkgutil.walk_packages(ipt_cds.__path__, "ipt_cds.", onerror=fail)
]
for name in names:
    importlib.import_module(name)

from starlette.applications import Starlette

frozen = gc.get_freeze_count()
gc.unfreeze()  # frozen objects are out of gc.get_objects()' sight
Path(report).write_text(json.dumps({
    "modules": names,
    "apps": sum(isinstance(o, Starlette) for o in gc.get_objects()),
    "threshold": [list(threshold), list(gc.get_threshold())],
    "frozen": frozen,
    "gc_enabled": gc.isenabled(),
    "threads": [threads, threading.active_count()],
    "records": records,
    "root_handlers": [type(h).__name__ for h in logging.root.handlers],
    "ipt_cds_handlers": len(logging.getLogger("ipt_cds").handlers),
    "loop_policy": type(asyncio.get_event_loop_policy()).__module__,
    "files": os.listdir("."),
}))
"""


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    empty = tmp_path / "cwd"
    empty.mkdir()
    report = tmp_path / "report.json"
    done = _run([sys.executable, "-I", "-W", "always", "-c", IMPORT_EVERYTHING, str(report)], empty)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    found: dict[str, Any] = json.loads(report.read_text())
    assert {"ipt_cds.cli", "ipt_cds.http.app", "ipt_cds.pipeline"} <= set(found["modules"])
    assert found["apps"] == 0, "an app was built at import"
    before, after = found["threshold"]
    assert after == before, "the garbage collector was tuned at import"
    assert found["frozen"] == 0
    assert found["gc_enabled"]
    assert found["records"] == []
    assert found["root_handlers"] == ["Keep"], "logging was configured at import"
    assert found["ipt_cds_handlers"] == 0
    assert found["threads"][1] == found["threads"][0], "a thread was started at import"
    assert found["loop_policy"].startswith("asyncio"), "an event loop policy was installed"
    assert found["files"] == [], "a file was written at import"


def test_serve_hands_uvicorn_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ipt-cds serve`` passes uvicorn the factory that builds and tunes the app in each worker,
    by an import string that resolves (workers import it themselves)."""
    import uvicorn

    from ipt_cds import cli
    from ipt_cds.http.app import served_app

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    for key in [k for k in os.environ if k.startswith("IPT_CDS_")]:
        monkeypatch.delenv(key)
    assert cli.main(["serve", "--port", "8999", "--workers", "2"]) == 0
    ((app, options),) = calls
    assert isinstance(app, str)
    module, _, attribute = app.partition(":")
    assert getattr(importlib.import_module(module), attribute) is served_app
    assert options.get("factory") is True
    assert (options["port"], options["workers"]) == (8999, 2)


def _pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a lock file."""
    text = lock.read_text()
    blocks = re.findall(r"^(\S+)==(\S+)((?:\s*\\\s*--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    assert blocks, f"{lock.name} pins something"
    lines = [line for line in text.splitlines() if re.match(r"[^\s#]", line)]
    assert len(lines) == len(blocks), f"every requirement of {lock.name} is pinned with =="
    return {
        canonicalize_name(name): (version, re.findall(r"sha256:([0-9a-f]{64})", hashes))
        for name, version, hashes in blocks
    }


@pytest.mark.parametrize(
    ("lock", "requires"),
    [
        ("requirements.lock", PYPROJECT["project"]["dependencies"]),
        ("requirements-build.lock", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_the_locks_pin_what_pyproject_asks_for_with_hashes(lock: str, requires: list[str]) -> None:
    """Fails when pyproject.toml changes and scripts/lock was not run again."""
    pins = _pins(ROOT / lock)
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []
    for text in requires:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {requirement.name}: run scripts/lock"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement.specifier}: run scripts/lock"
        )


def test_the_lock_holds_what_the_extras_bring() -> None:
    pins = _pins(ROOT / "requirements.lock")
    for name in ("uvloop", "httptools", "watchfiles", "websockets"):  # uvicorn[standard]
        assert name in pins
    assert "psycopg-binary" in pins  # psycopg[binary]
    assert "cryptography" in pins  # PyJWT[crypto]
