"""Client JWT per CDS Hooks 2.0: the spec's own sample verifies; every attack gets a bare 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ipt_cds.http.auth import Authenticator, KeyCache, MemoryReplayCache, Unauthorized
from ipt_cds.http.trust import Issuer, Trust
from ipt_cds.knowledge.errors import KnowledgeError

from .conftest import (
    DATA,
    FHIR_BASE,
    NOW,
    SERVICE_OF_HOOK,
    AppFactory,
    FakeFhir,
    Json,
    hook_request,
)

SPEC = DATA / "cds-hooks" / "spec-v2.0.1"
ISS = "https://ehr.example.org/"
BASE = "http://testserver"
SIGN = f"{BASE}/cds-services/ipt-order-sign"
T0 = int(NOW.timestamp())

EC_KEY = ec.generate_private_key(ec.SECP384R1())
EC_OTHER = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: Any, kid: str, alg: str) -> Json:
    algo = ECAlgorithm(ECAlgorithm.SHA384) if alg == "ES384" else RSAAlgorithm(RSAAlgorithm.SHA384)
    public: Json = json.loads(algo.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [_jwk(EC_KEY, "ec-1", "ES384"), _jwk(RSA_KEY, "rsa-1", "RS384")]}


def token(
    *,
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str | None = "ec-1",
    headers: Json | None = None,
    **claims: Any,
) -> str:
    payload: Json = {
        "iss": ISS,
        "aud": SIGN,
        "iat": T0,
        "exp": T0 + 300,
        "jti": str(uuid.uuid4()),
        "tenant": "tenant-a",
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    head: Json = dict(headers or {})
    if kid is not None:
        head["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=head)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _trust_file(tmp: Path, **issuer: Any) -> Path:
    (tmp / "jwks.json").write_text(json.dumps(JWKS))
    entry: Json = {
        "iss": ISS,
        "jwks_file": "jwks.json",
        "jku_allowed": ["https://ehr.example.org/jwks-rotating"],
        "fhir_servers": [FHIR_BASE],
        "tenants": ["tenant-a"],
    }
    entry.update(issuer)
    path = tmp / "trust.json"
    path.write_text(json.dumps({"issuers": [{k: v for k, v in entry.items() if v is not None}]}))
    return path


@pytest.fixture
def secured(make_client: AppFactory, tmp_path: Path) -> Callable[..., TestClient]:
    def make(fhir: FakeFhir | None = None, **settings: Any) -> TestClient:
        return make_client(
            fhir,
            auth_mode="required",
            trust_file=_trust_file(tmp_path),
            public_base_url=BASE,
            **settings,
        )

    return make


def _sign_call(client: TestClient, bearer: str | None, body: Json | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    payload = body or hook_request("order-sign", {"patient": None})
    response: httpx.Response = client.post(
        "/cds-services/ipt-order-sign", json=payload, headers=headers
    )
    return response


# --- the specification's sample ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_spec_sample_es384_jwt_verifies_with_a_frozen_clock() -> None:
    compact = (SPEC / "30-jwt-compact-es384.txt").read_text().strip()
    jwks = json.loads((SPEC / "26-jwks-public.json").read_text())
    payload = json.loads((SPEC / "25-jwt-payload.json").read_text())
    fetched: list[str] = []

    def serve_jwks(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, json=jwks)

    issuer = Issuer(iss=payload["iss"], jku_allowed=["https://fhir-ehr.example.com/jwk_uri"])
    frozen = float(payload["iat"] + 60)
    async with httpx.AsyncClient(transport=httpx.MockTransport(serve_jwks)) as http:
        auth = Authenticator(
            Trust([issuer]),
            KeyCache(http, lambda: frozen),
            MemoryReplayCache(lambda: frozen),
            lambda: frozen,
        )
        client = await auth.verify(f"Bearer {compact}", payload["aud"])
        assert client.issuer.iss == "https://fhir-ehr.example.com/"
        assert client.tenant == payload["tenant"]
        assert fetched == ["https://fhir-ehr.example.com/jwk_uri"]
        with pytest.raises(Unauthorized) as replayed:
            await auth.verify(f"Bearer {compact}", payload["aud"])
        assert replayed.value.reason.startswith("replayed jti")

        def after_exp() -> float:
            return float(payload["exp"] + 3600)

        later = Authenticator(
            Trust([issuer]), KeyCache(http, after_exp), MemoryReplayCache(after_exp), after_exp
        )
        with pytest.raises(Unauthorized) as expired:
            await later.verify(f"Bearer {compact}", payload["aud"])
        assert expired.value.reason == "expired or no exp"


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "kid"), [(EC_KEY, "ES384", "ec-1"), (RSA_KEY, "RS384", "rsa-1")]
)
def test_valid_es384_and_rs384_tokens_are_accepted(
    secured: Callable[..., TestClient], key: Any, alg: str, kid: str
) -> None:
    client = secured()
    response = _sign_call(client, token(key=key, alg=alg, kid=kid))
    assert response.status_code == 200, response.text


def test_discovery_needs_a_token_for_its_own_url(secured: Callable[..., TestClient]) -> None:
    client = secured()
    assert client.get("/cds-services").status_code == 401
    ok = client.get(
        "/cds-services", headers={"Authorization": f"Bearer {token(aud=f'{BASE}/cds-services')}"}
    )
    assert ok.status_code == 200
    assert sorted(s["id"] for s in ok.json()["services"]) == sorted(SERVICE_OF_HOOK.values())


# --- attacks ----------------------------------------------------------------------------


def _alg_none() -> str:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    body = _b64(
        json.dumps({"iss": ISS, "aud": SIGN, "iat": T0, "exp": T0 + 300, "jti": "n"}).encode()
    )
    return f"{head}.{body}."


def _hs256_with_public_key() -> str:
    pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
    body = _b64(
        json.dumps({"iss": ISS, "aud": SIGN, "iat": T0, "exp": T0 + 300, "jti": "h"}).encode()
    )
    signature = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _tampered() -> str:
    head, body, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["tenant"] = "tenant-b"
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


ATTACKS: dict[str, Callable[[], str | None]] = {
    "missing header": lambda: None,
    "not a JWT": lambda: "abc.def",
    "alg none": _alg_none,
    "HS256 signed with the public key": _hs256_with_public_key,
    "ES256 not accepted": lambda: token(key=ec.generate_private_key(ec.SECP256R1()), alg="ES256"),
    "wrong aud": lambda: token(aud=f"{BASE}/cds-services/ipt-patient-view"),
    "aud of another host": lambda: token(
        aud="https://other.example.org/cds-services/ipt-order-sign"
    ),
    "expired": lambda: token(iat=T0 - 900, exp=T0 - 600),
    "no exp": lambda: token(exp=None),
    "iat in the future": lambda: token(iat=T0 + 600, exp=T0 + 900),
    "nbf in the future": lambda: token(nbf=T0 + 600),
    "no jti": lambda: token(jti=None),
    "unknown kid": lambda: token(kid="ec-9"),
    "no kid": lambda: token(kid=None),
    "signed by another key": lambda: token(key=EC_OTHER),
    "RS384 header on an EC key id": lambda: token(key=RSA_KEY, alg="RS384", kid="ec-1"),
    "jku off the allowlist": lambda: token(headers={"jku": "https://evil.example.com/jwks"}),
    "unknown iss": lambda: token(iss="https://evil.example.com/"),
    "tenant not allowed": lambda: token(tenant="tenant-z"),
    "tampered payload": _tampered,
}


# What WWW-Authenticate says for each: fixed words, never a value from the token.
DESCRIBED = {
    "missing header": (
        "a signed client JWT is required (CDS Hooks 2.0): Authorization: Bearer <JWT>"
    ),
    "not a JWT": "not a JWT",
    "alg none": "alg must be ES384 or RS384",
    "HS256 signed with the public key": "alg must be ES384 or RS384",
    "ES256 not accepted": "alg must be ES384 or RS384",
    "wrong aud": "aud is not the URL called",
    "aud of another host": "aud is not the URL called",
    "expired": "expired or no exp",
    "no exp": "expired or no exp",
    "iat in the future": "iat missing or in the future",
    "nbf in the future": "not yet valid (nbf)",
    "no jti": "no jti",
    "unknown kid": "no key with the token's kid",
    "no kid": "no kid in the token header",
    "signed by another key": "signature rejected",
    "RS384 header on an EC key id": "the key does not match alg",
    "jku off the allowlist": "jku not allowed for the issuer",
    "unknown iss": "iss is not a trusted issuer",
    "tenant not allowed": "tenant not allowed for the issuer",
    "tampered payload": "signature rejected",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_get_a_401_naming_only_the_check_that_failed(
    secured: Callable[..., TestClient], attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = secured()
    bearer = ATTACKS[attack]()
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = _sign_call(client, bearer)
    assert response.status_code == 401
    assert response.json() == {
        "code": "unauthorized",
        "message": "The request is not authenticated.",
    }
    assert "unauthorized POST /cds-services/ipt-order-sign" in caplog.text
    if bearer:
        assert bearer not in caplog.text
    # RFC 6750: the challenge says which check failed; with no token, no error code.
    error = 'error="invalid_token", ' if bearer else ""
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="ipt-cds", {error}error_description="{DESCRIBED[attack]}"'
    )


def test_every_401_says_bearer_discovery_and_stats_too(secured: Callable[..., TestClient]) -> None:
    client = secured()
    for path in ("/cds-services", "/stats/cards"):
        response = client.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="ipt-cds", error="invalid_token"')
        assert "not-a-jwt" not in challenge


def test_a_replayed_jti_is_refused(secured: Callable[..., TestClient]) -> None:
    client = secured()
    bearer = token()
    assert _sign_call(client, bearer).status_code == 200
    assert _sign_call(client, bearer).status_code == 401


def test_a_replay_to_another_replica_is_refused_with_the_database_store(
    secured: Callable[..., TestClient], database_url: str
) -> None:
    first = secured(jti_store="database", database_url=database_url)
    second = secured(jti_store="database", database_url=database_url)
    bearer = token()
    assert _sign_call(first, bearer).status_code == 200
    assert _sign_call(second, bearer).status_code == 401


def test_keys_rotate_through_the_jwks_url(make_client: AppFactory, tmp_path: Path) -> None:
    published = {"keys": [_jwk(EC_KEY, "old", "ES384")]}
    fetches: list[str] = []
    fhir = FakeFhir()
    fhir_handle = fhir.handle

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jwks":
            fetches.append(request.url.path)
            return httpx.Response(200, json=published)
        return fhir_handle(request)

    fhir.handle = route  # type: ignore[method-assign]
    trust = _trust_file(tmp_path, jwks_file=None, jwks_url="https://ehr.example.org/jwks")
    now = [NOW]
    client = make_client(
        fhir, clock=lambda: now[0], auth_mode="required", trust_file=trust, public_base_url=BASE
    )
    assert _sign_call(client, token(kid="old")).status_code == 200
    assert _sign_call(client, token(kid="old")).status_code == 200
    assert fetches == ["/jwks"], "the JWKS is cached"
    published["keys"] = [_jwk(EC_OTHER, "new", "ES384")]
    # An unknown kid within a minute of the last fetch is refused without hammering the EHR's
    # JWKS endpoint; a minute later the new key set is fetched and the new key works.
    assert _sign_call(client, token(key=EC_OTHER, kid="new")).status_code == 401
    assert fetches == ["/jwks"]
    now[0] = NOW + timedelta(seconds=61)
    later = token(key=EC_OTHER, kid="new", iat=T0 + 61, exp=T0 + 361)
    assert _sign_call(client, later).status_code == 200
    assert fetches == ["/jwks", "/jwks"]


def test_jku_on_the_allowlist_is_used(make_client: AppFactory, tmp_path: Path) -> None:
    fhir = FakeFhir()
    fhir_handle = fhir.handle

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jwks-rotating":
            return httpx.Response(200, json={"keys": [_jwk(EC_OTHER, "jku-key", "ES384")]})
        return fhir_handle(request)

    fhir.handle = route  # type: ignore[method-assign]
    client = make_client(
        fhir, auth_mode="required", trust_file=_trust_file(tmp_path), public_base_url=BASE
    )
    bearer = token(
        key=EC_OTHER, kid="jku-key", headers={"jku": "https://ehr.example.org/jwks-rotating"}
    )
    assert _sign_call(client, bearer).status_code == 200


# --- no SSRF ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server",
    [
        "https://evil.example.com/fhir",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:6379",
        "https://ehr.example.org/fhir/../admin",
        "https://ehr.example.org:8443/fhir",
    ],
)
def test_fhir_servers_not_vouched_for_are_never_contacted(
    secured: Callable[..., TestClient], server: str
) -> None:
    fhir = FakeFhir()
    client = secured(fhir)
    body = hook_request("order-sign")
    body["fhirServer"] = server
    response = _sign_call(client, token(), body)
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_server_not_allowed"
    assert fhir.requests == []


def test_the_issuers_fhir_server_is_contacted(secured: Callable[..., TestClient]) -> None:
    fhir = FakeFhir()
    client = secured(fhir)
    response = _sign_call(client, token(), hook_request("order-sign"))
    assert response.status_code == 200
    assert {r.url.host for r in fhir.requests} == {"ehr.example.org"}


def test_with_auth_off_only_the_global_allowlist_is_contacted(make_client: AppFactory) -> None:
    fhir = FakeFhir()
    client = make_client(fhir, fhir_allowlist=[])
    body = hook_request("order-sign")
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_server_not_allowed"
    # The answer names the server and the settings that would allow it.
    message = response.json()["message"]
    assert repr(body["fhirServer"]) in message
    assert "IPT_CDS_FHIR_ALLOWLIST" in message
    assert "fhir_servers" in message
    assert fhir.requests == []


@pytest.mark.parametrize(
    "bad", ["http://ehr.example.org/fhir", "ftp://127.0.0.1/fhir", "http://10.0.0.5/fhir"]
)
def test_plain_http_is_allowed_only_for_loopback_test_servers(
    make_client: AppFactory, bad: str
) -> None:
    with pytest.raises(KnowledgeError, match="must be https"):
        make_client(fhir_allowlist=[bad])


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [
        ({"fhir_servers": ["http://ehr.example.org/fhir"]}, "must be https"),
        ({"jwks_file": None, "jku_allowed": []}, "give jwks_url, jwks_file or jwks"),
        ({"jwks_url": "https://ehr.example.org/jwks"}, "give one of"),
        ({"jwks_file": None, "jwks_url": "http://ehr.example.org/jwks"}, "must be https"),
    ],
)
def test_a_bad_trust_file_stops_start_up(
    make_client: AppFactory, tmp_path: Path, issuer: Json, problem: str
) -> None:
    trust = _trust_file(tmp_path, **issuer)
    with pytest.raises(KnowledgeError, match=problem) as caught:
        make_client(auth_mode="required", trust_file=trust, public_base_url=BASE)
    assert str(caught.value).startswith(str(trust))


def test_auth_required_without_a_trust_file_stops_start_up(make_client: AppFactory) -> None:
    with pytest.raises(KnowledgeError, match="IPT_CDS_TRUST_FILE is required"):
        make_client(auth_mode="required")


def test_auth_off_warns_loudly_at_start_up(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        make_client()
    assert "CLIENT AUTHENTICATION IS OFF" in caplog.text
