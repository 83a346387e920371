"""The project's keys as Supabase has them today: asymmetric JWT signing keys and the new API keys.

- Signing keys: `[auth] signing_keys_path` names a JSON array of private JWKs (EC P-256 for ES256, RSA
  for RS256), the file `supabase gen signing-key` writes, loaded with the config (config/keys.py).
  Their public parts verify user JWTs beside the HS256 project secret, and are what functions get as
  `SUPABASE_JWKS`.
- API keys: the publishable (`sb_publishable_...`) and secret (`sb_secret_...`) keys of a local Supabase
  stack. They are not JWTs: `verify_jwt` refuses them, and a function that takes them checks them itself
  against `SUPABASE_PUBLISHABLE_KEYS` / `SUPABASE_SECRET_KEYS`.
- `mint_token` / `mint_for`: a signed JWT for tests and `edgecli.testing`, with either kind of key.

Nothing here imports CLI code, so test helpers and workers may use it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgecli.config.keys import SigningKey  # loaded with the config, which holds them

# PyJWT (and the cryptography it loads) is imported where tokens are signed: serve's environment and
# invoke only need the constants and JSON below.
if TYPE_CHECKING:
    from edgecli.config import Config

# What `supabase start` prints for every local stack: fixed, public values, so clients written against
# the Supabase CLI work against edgecli unchanged.
PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"

DEFAULT_LIFETIME_S = 3600


def jwks_json(keys: Sequence[SigningKey], secret: str) -> str:
    """`SUPABASE_JWKS` as the Supabase CLI injects it: the public signing keys, then the legacy secret as
    a symmetric (`oct`) key."""
    secret_jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()}
    return json.dumps({"keys": [*(dict(k.public_jwk) for k in keys), secret_jwk]}, separators=(",", ":"))


def api_keys_env() -> dict[str, str]:
    """`SUPABASE_PUBLISHABLE_KEYS` / `SUPABASE_SECRET_KEYS`: JSON maps of key name to key, as injected."""
    return {
        "SUPABASE_PUBLISHABLE_KEYS": json.dumps({"default": PUBLISHABLE_KEY}, separators=(",", ":")),
        "SUPABASE_SECRET_KEYS": json.dumps({"default": SECRET_KEY}, separators=(",", ":")),
    }


def mint_token(
    claims: Mapping[str, Any],
    *,
    secret: str | None = None,
    key: SigningKey | None = None,
    lifetime_s: int = DEFAULT_LIFETIME_S,
) -> str:
    """A JWT carrying `claims`, signed HS256 with `secret` or with the asymmetric `key` (its own algorithm
    and kid). `iat` and `exp` are added unless `claims` has them."""
    import jwt

    if (secret is None) == (key is None):
        raise ValueError("mint_token needs exactly one of secret= or key=")
    now = int(time.time())
    payload = {"iat": now, "exp": now + lifetime_s, **claims}
    if key is not None:
        headers = {"kid": key.kid} if key.kid else None
        return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)
    assert secret is not None
    return _encode_hs256(payload, secret)


def mint_for(
    config: Config,
    claims: Mapping[str, Any],
    *,
    algorithm: str | None = None,
    lifetime_s: int = DEFAULT_LIFETIME_S,
) -> str:
    """A token the project's `verify_jwt` accepts. `algorithm`: "HS256" (the JWT secret), "ES256" or
    "RS256" (the first signing key of that type); None: the first signing key when there is one, as
    Supabase Auth signs with it, else HS256."""
    if algorithm is None:
        algorithm = config.signing_keys[0].alg if config.signing_keys else "HS256"
    if algorithm == "HS256":
        return mint_token(claims, secret=config.jwt_secret, lifetime_s=lifetime_s)
    for key in config.signing_keys:
        if key.alg == algorithm:
            return mint_token(claims, key=key, lifetime_s=lifetime_s)
    have = ", ".join(sorted({k.alg for k in config.signing_keys})) or "none"
    raise ValueError(f"no {algorithm} key in [auth] signing_keys_path (signing keys: {have})")


def _encode_hs256(payload: Mapping[str, Any], secret: str) -> str:
    import warnings

    import jwt

    with warnings.catch_warnings():  # a short local secret is the config loader's to judge
        warnings.filterwarnings("ignore", message="The HMAC key is")
        return jwt.encode(dict(payload), secret, algorithm="HS256")
