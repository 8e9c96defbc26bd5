"""What a newcomer meets first, without surprises: each `invoke --fixture` is a new hook call
(a retry only when asked), `dev-auth init` keeps its private key out of the checkout, and the
docs install the spark extra without undoing the editable install."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipt_cds.cli import main
from ipt_cds.devtools import integrator

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = "in-psychosis-schizophrenia-ipt"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The bodies `invoke` posts, answered with no cards."""
    bodies: list[dict[str, Any]] = []

    def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        bodies.append(body)
        return httpx.Response(200, json={"cards": []})

    monkeypatch.setattr(integrator, "_post_over_http", post)
    return bodies


def _invoke(*extra: str) -> int:
    args = ["invoke", "ipt-order-sign", "--fixture", FIXTURE, "--service-url", "http://x"]
    return main([*args, *extra])


def test_each_invoke_of_a_fixture_is_a_new_hook_call(sent: list[dict[str, Any]]) -> None:
    assert _invoke() == 0
    assert _invoke() == 0
    first, second = (body["hookInstance"] for body in sent)
    assert first != second
    assert uuid.UUID(first).version == uuid.UUID(second).version == 4


def test_same_instance_sends_the_fixtures_own_hook_instance(sent: list[dict[str, Any]]) -> None:
    assert _invoke("--same-instance") == 0
    assert _invoke("--same-instance") == 0
    first, second = (body["hookInstance"] for body in sent)
    assert first == second == str(uuid.uuid5(uuid.NAMESPACE_URL, f"ipt-cds:{FIXTURE}"))


def test_same_instance_is_refused_with_a_request_file(capsys: pytest.CaptureFixture[str]) -> None:
    request = ROOT / "fhir_fixtures" / "requests" / f"{FIXTURE}.json"
    with pytest.raises(SystemExit) as exit_:
        main(["invoke", "ipt-order-sign", "--request", str(request), "--same-instance"])
    assert exit_.value.code == 2
    assert "--same-instance is for --fixture" in capsys.readouterr().err


def test_dev_auth_keeps_its_key_out_of_the_checkout_by_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sent: list[dict[str, Any]],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(ROOT)
    assert main(["dev-auth", "init"]) == 0
    folder = tmp_path / "config" / "ipt-cds" / "dev-auth"
    assert (folder / "private-key.pem").stat().st_mode & 0o077 == 0
    assert f"IPT_CDS_TRUST_FILE={folder / 'trust.yaml'}" in capsys.readouterr().out
    assert not (ROOT / "dev-auth").exists()
    # token and invoke --signing-key find it there without being told.
    assert main(["dev-auth", "token", "--aud", "http://x/cds-services"]) == 0
    assert capsys.readouterr().out.count(".") == 2, "a JWT"
    assert _invoke("--signing-key") == 0


def test_gitignore_covers_a_dev_auth_folder_made_in_the_checkout() -> None:
    """`dev-auth init dev-auth`, as older notes say: git must not offer the key for a commit."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(
        ["git", "check-ignore", "--no-index", "dev-auth/private-key.pem"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr


def test_docs_install_extras_editable() -> None:
    """`pip install '.[spark]'` in a checkout set up with `pip install -e .` replaces the
    editable install with a copy: later edits stop taking effect."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts.append(ROOT / "ipt_cds" / "replay" / "run.py")
    plain = re.compile(r"pip install (?!-e )'?\.\[")
    found = [
        f"{path.name}: {m.group(0)}" for path in texts for m in plain.finditer(path.read_text())
    ]
    assert found == []
