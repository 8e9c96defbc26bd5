"""Client authentication per CDS Hooks 2.0: the EHR signs a JWT for every call.

Accepted only: ES384 or RS384 with a ``kid``; a key from the issuer's JWKS (configured URL,
file or inline; the token's ``jku`` only when that URL is on the issuer's allowlist), cached
and refreshed when an unknown ``kid`` appears (key rotation); ``iss`` a configured issuer;
``aud`` exactly the URL of the endpoint called; ``exp``, ``iat`` and ``nbf`` within a small
leeway; a ``jti`` never seen before; ``tenant`` on the issuer's list when it has one.

Every failure is a 401 whose ``WWW-Authenticate: Bearer`` header says in fixed words which check
failed (RFC 6750), never a value from the token; the log names the reason in full and the
issuer, never the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from jwt import PyJWK
from starlette.concurrency import run_in_threadpool

from ipt_cds.http.trust import Issuer, Trust
from ipt_cds.ops.config import DEFAULT_JWT_LEEWAY_SECONDS
from ipt_cds.protocol.errors import ServiceError

log = logging.getLogger("ipt_cds")

ALGORITHMS = ("ES384", "RS384")
KEY_TYPES = {"ES384": "EC", "RS384": "RSA"}

# A JWKS is refetched after an hour even when every kid is known, so that a revoked key stops
# verifying within the hour; an unknown kid (a rotation) refetches sooner, but at most once a
# minute, so that tokens with made-up kids cannot make us hammer the issuer's JWKS endpoint.
JWKS_MAX_AGE_SECONDS = 3600
JWKS_REFETCH_MIN_SECONDS = 60
# The JWKS is fetched while a hook call waits: a slow issuer must fail it well before the
# EHR's own timeout.
JWKS_FETCH_TIMEOUT_SECONDS = 3
# Seen jtis are swept of the expired ones only when there are more than this many: a sweep
# walks them all, so it stays rare, and memory stays bounded by the tokens still unexpired.
REPLAY_SWEEP_ABOVE = 10_000
# Claims the caller chose are quoted in the log reason cut to this length (an aud may name a
# few URLs, so it gets a little more), so that a forged token cannot flood the log.
QUOTED_CLAIM_CHARS = 100
QUOTED_AUD_CHARS = 120


class Unauthorized(ServiceError):
    """``reason`` is for the log (it may quote claims the caller chose); ``public`` is one of
    the fixed phrases below, for the caller. With no token at all, RFC 6750 section 3.1 wants
    no error code: the header then names the realm and what is expected only."""

    status = 401
    code = "unauthorized"

    def __init__(self, reason: str, public: str = "the token was not accepted") -> None:
        super().__init__("The request is not authenticated.")
        self.reason, self.public = reason, public

    def headers(self) -> dict[str, str]:
        error = "" if self.public == MISSING_CREDENTIALS else 'error="invalid_token", '
        challenge = f'Bearer realm="{REALM}", {error}error_description="{self.public}"'
        return {"WWW-Authenticate": challenge}


REALM = "ipt-cds"
MISSING_CREDENTIALS = "a signed client JWT is required (CDS Hooks 2.0): Authorization: Bearer <JWT>"


@dataclass(frozen=True)
class Client:
    issuer: Issuer
    tenant: str | None


class ReplayCache(Protocol):
    async def first_use(self, iss: str, jti: str, expires_at: float) -> bool: ...


class MemoryReplayCache:
    """``jti`` values seen by this process, kept until their token expires."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._clock = clock

    async def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        if len(self._seen) > REPLAY_SWEEP_ABOVE:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        if (iss, jti) in self._seen:
            return False
        self._seen[(iss, jti)] = expires_at
        return True


class KeyCache:
    """Signing keys by JWKS source, refetched at most once a minute on an unknown ``kid``."""

    def __init__(self, http: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        self._http, self._clock = http, clock
        self._keys: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
        self._lock = asyncio.Lock()

    async def find(self, source: str, inline: dict[str, Any] | None, kid: str) -> dict[str, Any]:
        if inline is not None:
            key = _by_kid(inline).get(kid)
            if key is None:
                raise Unauthorized(f"unknown kid {kid!r}", "no key with the token's kid")
            return key
        fetched_at, keys = self._keys.get(source, (0.0, {}))
        age = self._clock() - fetched_at
        if (kid not in keys and age > JWKS_REFETCH_MIN_SECONDS) or age > JWKS_MAX_AGE_SECONDS:
            async with self._lock:
                keys = await self._fetch(source)
        if kid not in keys:
            raise Unauthorized(f"unknown kid {kid!r}", "no key with the token's kid")
        return keys[kid]

    async def _fetch(self, url: str) -> dict[str, dict[str, Any]]:
        try:
            response = await self._http.get(url, timeout=JWKS_FETCH_TIMEOUT_SECONDS)
            response.raise_for_status()
            keys = _by_kid(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise Unauthorized(
                f"JWKS {url} unavailable: {type(exc).__name__}",
                "the issuer's keys could not be read",
            ) from None
        self._keys[url] = (self._clock(), keys)
        return keys


def _quoted(claim: Any, chars: int = QUOTED_CLAIM_CHARS) -> str:
    return repr(str(claim)[:chars])


def _by_kid(jwks: Any) -> dict[str, dict[str, Any]]:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    return {
        k["kid"]: k for k in keys or [] if isinstance(k, dict) and isinstance(k.get("kid"), str)
    }


class Authenticator:
    def __init__(
        self,
        trust: Trust,
        keys: KeyCache,
        replay: ReplayCache,
        clock: Callable[[], float] = time.time,
        leeway: float = DEFAULT_JWT_LEEWAY_SECONDS,
    ) -> None:
        self.trust, self.keys, self.replay, self.clock, self.leeway = (
            trust,
            keys,
            replay,
            clock,
            leeway,
        )

    async def verify(self, authorization: str | None, audience: str) -> Client:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("no bearer token", MISSING_CREDENTIALS)
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {type(exc).__name__}", "not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"algorithm {alg!r} not accepted", "alg must be ES384 or RS384")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("no kid in the header", "no kid in the token header")
        issuer = self.trust.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise Unauthorized(
                f"unknown issuer {_quoted(unverified.get('iss'))}", "iss is not a trusted issuer"
            )
        jwk = await self._key(issuer, header, kid)
        if jwk.get("kty") != KEY_TYPES[alg] or jwk.get("alg", alg) != alg:
            raise Unauthorized(
                f"key {kid!r} does not match algorithm {alg}", "the key does not match alg"
            )
        try:
            claims = jwt.decode(
                token,
                PyJWK(jwk, algorithm=alg).key,
                algorithms=[alg],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(
                f"signature rejected: {type(exc).__name__}", "signature rejected"
            ) from None
        jti = self._claims(claims, issuer, audience)
        if not await self.replay.first_use(issuer.iss, jti, float(claims["exp"]) + self.leeway):
            raise Unauthorized(f"replayed jti from {issuer.iss}", "jti already used")
        tenant = claims.get("tenant")
        return Client(issuer, tenant if isinstance(tenant, str) else None)

    async def _key(self, issuer: Issuer, header: dict[str, Any], kid: str) -> dict[str, Any]:
        jku = None if issuer.ignore_jku else header.get("jku")
        if jku is not None:
            if jku not in issuer.jku_allowed:
                raise Unauthorized(
                    f"jku {_quoted(jku)} not allowed for {issuer.iss}",
                    "jku not allowed for the issuer",
                )
            return await self.keys.find(str(jku), None, kid)
        return await self.keys.find(issuer.jwks_url or issuer.iss, issuer.jwks, kid)

    def _claims(self, claims: dict[str, Any], issuer: Issuer, audience: str) -> str:
        """Check the claims; answer the jti, whose single use is checked last."""
        now, leeway = self.clock(), self.leeway
        aud = claims.get("aud")
        if aud != audience and not (isinstance(aud, list) and audience in aud):
            raise Unauthorized(
                f"aud {_quoted(aud, QUOTED_AUD_CHARS)} is not {audience!r}",
                "aud is not the URL called",
            )
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not isinstance(exp, int | float) or exp < now - leeway:
            raise Unauthorized("expired or no exp", "expired or no exp")
        if not isinstance(iat, int | float) or iat > now + leeway:
            raise Unauthorized("iat missing or in the future", "iat missing or in the future")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + leeway):
            raise Unauthorized("not yet valid (nbf)", "not yet valid (nbf)")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("no jti", "no jti")
        if issuer.tenants is not None and claims.get("tenant") not in issuer.tenants:
            raise Unauthorized(
                f"tenant not allowed for {issuer.iss}", "tenant not allowed for the issuer"
            )
        return jti


class DatabaseReplayCache:
    """``jti`` values in the shared store, so that a token replayed to another replica fails."""

    def __init__(self, store: Any, clock: Callable[[], float]) -> None:
        self._store, self._clock = store, clock

    async def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        first: bool = await run_in_threadpool(
            self._store.first_use, iss, jti, expires_at, self._clock()
        )
        return first
