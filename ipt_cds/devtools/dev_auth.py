"""``ipt-cds dev-auth``: client authentication on one machine, for trying
``IPT_CDS_AUTH_MODE=required`` without an EHR. ``init DIR`` writes an ES384 key pair, its JWKS
and a trust file naming a local issuer whose keys are pinned; ``token`` signs a CDS Hooks client
JWT as that issuer; ``ipt-cds invoke --signing-key DIR`` signs its own calls with it.

For development only: the private key sits in a file, and anyone holding it is a trusted EHR.
So by default the CLI writes them outside any checkout (``ipt_cds/cli.py``, ``dev_auth_folder``),
where a ``git add`` cannot pick the key up.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ipt_cds.devtools.fixtures import SANDBOX_FHIR

ISSUER = "https://dev-issuer.ipt-cds.invalid"  # .invalid: never a real host (RFC 2606)
SUBJECT = "ipt-cds-dev-client"
KID = "ipt-cds-dev-1"
KEY_FILE, JWKS_FILE, TRUST_FILE = "private-key.pem", "jwks.json", "trust.yaml"
# CDS Hooks: a client JWT lives five minutes at most.
LIFETIME_SECONDS = 300


class DevAuthError(Exception):
    pass


def init(folder: Path, out: TextIO, fhir_server: str = SANDBOX_FHIR) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / KEY_FILE
    if key_path.exists():
        raise DevAuthError(f"{key_path} exists: remove the folder's files to make a new key")
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(pem)
    public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    (folder / JWKS_FILE).write_text(json.dumps({"keys": [public]}, indent=2) + "\n")
    trust = {
        "issuers": [
            {
                "iss": ISSUER,
                "jwks_file": JWKS_FILE,  # read relative to this file
                "ignore_jku": True,
                "fhir_servers": [fhir_server],
            }
        ]
    }
    (folder / TRUST_FILE).write_text(yaml.safe_dump(trust, sort_keys=False))
    out.write(
        f"Wrote {key_path} (keep it private), {folder / JWKS_FILE} and {folder / TRUST_FILE}.\n"
        "Start the service with:\n"
        f"  IPT_CDS_AUTH_MODE=required IPT_CDS_TRUST_FILE={folder / TRUST_FILE} "
        "IPT_CDS_PUBLIC_BASE_URL=http://127.0.0.1:8080 ipt-cds serve\n"
    )
    return 0


def token(folder: Path, audience: str, now: float | None = None) -> str:
    """A client JWT for ``audience`` (the URL called, e.g. .../cds-services/ipt-order-sign).
    ``folder``: the one ``dev-auth init`` wrote, or its private key file itself."""
    key_file = folder if folder.is_file() else folder / KEY_FILE
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (FileNotFoundError, NotADirectoryError):
        raise DevAuthError(
            f"no {KEY_FILE} in {folder}: run `ipt-cds dev-auth init {folder}` first"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise DevAuthError(
            f"{key_file}: not a private key `ipt-cds dev-auth init` wrote ({type(exc).__name__})"
        ) from None
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": audience,
        "iat": issued,
        "exp": issued + LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})  # type: ignore[arg-type]
