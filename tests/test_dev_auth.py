"""The auth kit, end to end over HTTP: ``dev-auth init`` writes a key, its JWKS and a trust file
the service starts with under ``IPT_CDS_AUTH_MODE=required``; ``dev-auth token`` and ``invoke
--signing-key`` sign calls it accepts; without a token, or with another key, it refuses. And
an issuer that pins its keys ignores a token's ``jku``."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ipt_cds.cli import main
from ipt_cds.devtools import dev_auth
from ipt_cds.http.app import create_app
from ipt_cds.http.trust import Trust
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.ops.config import Settings

from .conftest import NOW
from .fhir_server import free_port
from .serving import serving

FIXTURE = "in-psychosis-schizophrenia-ipt"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("dev-auth")
    assert main(["dev-auth", "init", str(folder / "keys")]) == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site = folder / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'store.sqlite3'}",
        site_file=site,
        auth_mode="required",
        trust_file=folder / "keys" / dev_auth.TRUST_FILE,
        public_base_url=base,
    )
    with serving(create_app(settings), port):
        yield folder / "keys", base


def _request() -> dict[str, object]:
    from ipt_cds.devtools.fixtures import load_cases

    (case,) = [c for c in load_cases() if c.name == FIXTURE]
    return case.request(NOW, "http://127.0.0.1:8090/fhir")


def test_init_writes_a_private_key_a_jwks_and_a_trust_file(kit: tuple[Path, str]) -> None:
    keys, _ = kit
    assert stat.S_IMODE((keys / dev_auth.KEY_FILE).stat().st_mode) == 0o600
    jwks = json.loads((keys / dev_auth.JWKS_FILE).read_text())
    assert [(k["kty"], k["crv"], k["alg"], k["kid"]) for k in jwks["keys"]] == [
        ("EC", "P-384", "ES384", dev_auth.KID)
    ]
    assert "d" not in jwks["keys"][0], "the public key only"
    assert main(["dev-auth", "init", str(keys)]) == 2, "an existing key is never overwritten"


def test_a_printed_token_is_accepted_and_no_token_is_refused(
    kit: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    keys, base = kit
    url = f"{base}/cds-services/ipt-order-sign"
    assert main(["dev-auth", "token", "--aud", url, "--dir", str(keys)]) == 0
    token = capsys.readouterr().out.strip()
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES384", dev_auth.KID)
    signed = httpx.post(url, json=_request(), headers={"Authorization": f"Bearer {token}"})
    assert signed.status_code == 200, signed.text
    assert signed.json()["cards"]
    assert httpx.post(url, json=_request()).status_code == 401
    replayed = httpx.post(url, json=_request(), headers={"Authorization": f"Bearer {token}"})
    assert replayed.status_code == 401, "a token's jti is used once"


def test_invoke_signs_its_own_calls(
    kit: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    keys, base = kit
    args = ["invoke", "ipt-order-sign", "--fixture", FIXTURE, "--service-url", base]
    assert main([*args, "--signing-key", str(keys)]) == 0
    assert "ipt-psychosis" in capsys.readouterr().out
    # The key file itself, as a newcomer passes it, signs as well.
    assert main([*args, "--signing-key", str(keys / dev_auth.KEY_FILE)]) == 0
    assert "ipt-psychosis" in capsys.readouterr().out
    assert main(args) == 1, "unsigned: the service refuses"
    assert "HTTP 401" in capsys.readouterr().out


def test_a_signing_key_that_is_no_key_is_one_line(
    kit: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base = kit
    args = ["invoke", "ipt-order-sign", "--fixture", FIXTURE, "--service-url", base]
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")
    for given in (not_a_key, tmp_path / "missing-folder", not_a_key / "nested"):
        assert main([*args, "--signing-key", str(given)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "Traceback" not in err


def test_a_pinned_issuer_ignores_the_tokens_jku_and_another_key_fails(
    kit: tuple[Path, str],
) -> None:
    keys, base = kit
    url = f"{base}/cds-services/ipt-order-sign"
    claims = jwt.decode(dev_auth.token(keys, url), options={"verify_signature": False})
    key = serialization.load_pem_private_key((keys / dev_auth.KEY_FILE).read_bytes(), None)
    # A jku no trust file lists: refused by default, ignored by a pinned issuer (ignore_jku).
    headers = {"kid": dev_auth.KID, "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}
    with_jku = jwt.encode(claims, key, algorithm="ES384", headers=headers)  # type: ignore[arg-type]
    answer = httpx.post(url, json=_request(), headers={"Authorization": f"Bearer {with_jku}"})
    assert answer.status_code == 200, answer.text
    other = ec.generate_private_key(ec.SECP384R1())
    claims["jti"] = "another-jti"
    forged = jwt.encode(claims, other, algorithm="ES384", headers={"kid": dev_auth.KID})
    answer = httpx.post(url, json=_request(), headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401


def test_token_without_init_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev-auth", "token", "--aud", "http://x/", "--dir", str(tmp_path)]) == 2
    assert "run `ipt-cds dev-auth init" in capsys.readouterr().err


def test_ignore_jku_needs_keys_to_pin(tmp_path: Path) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        "issuers:\n  - iss: https://ehr.example.org/\n    ignore_jku: true\n"
        "    jku_allowed: [https://ehr.example.org/jwks]\n"
    )
    with pytest.raises(KnowledgeError, match="ignore_jku needs the keys to pin"):
        Trust.load(trust)
