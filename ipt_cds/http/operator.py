"""The operator's bearer token: statistics and metrics for the people who run the service.

With client authentication required, ``/stats/cards`` needs a client JWT, which only an EHR
holds, and ``/metrics`` is open to whoever reaches it. ``IPT_CDS_OPERATOR_TOKEN_FILE`` names a
file holding one secret (at least 32 characters, e.g. ``openssl rand -hex 32``): sent as
``Authorization: Bearer <token>``, it opens ``/stats``, ``/stats/cards`` and ``/metrics``, and
once it is set ``/metrics`` needs it. It is compared in constant time (digests of equal length,
``hmac.compare_digest``) and never logged; it opens nothing else: no hook call, no feedback.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from ipt_cds.http.auth import REALM, Unauthorized
from ipt_cds.knowledge.errors import KnowledgeError

MIN_TOKEN_CHARS = 32
OPERATOR_REALM = f"{REALM}-operator"


class OperatorUnauthorized(Unauthorized):
    def headers(self) -> dict[str, str]:
        return {
            "WWW-Authenticate": f'Bearer realm="{OPERATOR_REALM}", '
            f'error_description="{self.public}"'
        }


class OperatorAccess:
    def __init__(self, token: str | None) -> None:
        self._digest = _digest(token) if token else None

    @classmethod
    def load(cls, path: Path | None) -> OperatorAccess:
        """From IPT_CDS_OPERATOR_TOKEN_FILE; a problem with the file stops the start-up."""
        if path is None:
            return cls(None)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise KnowledgeError(f"{path}: operator token file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeError(f"{path}: operator token file cannot be read ({exc})") from None
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise KnowledgeError(
                f"{path}: the operator token must be one word of at least {MIN_TOKEN_CHARS} "
                "characters (e.g. the output of `openssl rand -hex 32`)"
            )
        return cls(token)

    @property
    def configured(self) -> bool:
        return self._digest is not None

    def allows(self, authorization: str | None) -> bool:
        """Whether the header carries the operator token."""
        if self._digest is None:
            return False
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_digest(token.strip()), self._digest)

    def require(self, authorization: str | None) -> None:
        """For what only the operator reads once a token is set (``/metrics``)."""
        if self._digest is not None and not self.allows(authorization):
            raise OperatorUnauthorized(
                "no operator token", "the operator token (IPT_CDS_OPERATOR_TOKEN_FILE) is required"
            )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
