"""The project's keys as Supabase has them today: asymmetric JWT signing keys and the new API keys.

- Signing keys: `[auth] signing_keys_path` names a JSON array of private JWKs (EC P-256 for ES256, RSA
  for RS256), the file `supabase gen signing-key` writes. Their public parts verify user JWTs beside the
  HS256 project secret, and are what functions get as `SUPABASE_JWKS`.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# PyJWT (and the cryptography it loads) is imported where keys are loaded or tokens signed: serve's
# environment and invoke only need the constants and JSON below.
if TYPE_CHECKING:
    from edgecli.config import Config

# What `supabase start` prints for every local stack: fixed, public values, so clients written against
# the Supabase CLI work against edgecli unchanged.
PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"

# The algorithm each key type signs with; a token is only ever checked with its own key type's algorithm.
ALGORITHM_OF_KTY: Mapping[str, str] = {"EC": "ES256", "RSA": "RS256"}
_PUBLIC_FIELDS: Mapping[str, tuple[str, ...]] = {"EC": ("crv", "x", "y"), "RSA": ("n", "e")}
DEFAULT_LIFETIME_S = 3600


class SigningKeyError(ValueError):
    """A signing key that cannot be used; the message says which one and why."""


@dataclass(frozen=True)
class SigningKey:
    """One asymmetric key: its id, algorithm, the private key (to mint) and the public one (to verify).

    Equal when the public JWK is: key objects compare by identity, and the reloader compares the keys of
    each config.toml it reads with the running ones."""

    kid: str | None
    alg: str
    private: Any = field(compare=False)
    public: Any = field(compare=False)
    public_jwk: Mapping[str, Any] = field(hash=False)


def load_signing_keys(jwks: Sequence[Mapping[str, Any]]) -> tuple[SigningKey, ...]:
    """Build the keys of a signing-keys file's parsed JSON array. Raises SigningKeyError."""
    return tuple(_load_one(index, jwk) for index, jwk in enumerate(jwks))


def _load_one(index: int, jwk: Mapping[str, Any]) -> SigningKey:
    where = f"key {index + 1}" + (f" (kid {jwk['kid']!r})" if isinstance(jwk.get("kid"), str) else "")
    kty = jwk.get("kty")
    alg = ALGORITHM_OF_KTY.get(kty) if isinstance(kty, str) else None
    if alg is None:
        raise SigningKeyError(f'{where} has kty {kty!r}; allowed: "EC" (ES256) or "RSA" (RS256)')
    if jwk.get("alg", alg) != alg:
        raise SigningKeyError(
            f"{where} is a {kty} key but says alg {jwk.get('alg')!r}; a {kty} key signs {alg}"
        )
    if "d" not in jwk:
        raise SigningKeyError(f'{where} has no private part ("d"); `supabase gen signing-key` writes one')
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    loader = ECAlgorithm if kty == "EC" else RSAAlgorithm
    try:
        private: Any = loader.from_jwk(json.dumps(dict(jwk)))
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise SigningKeyError(f"{where} is not a valid {kty} private key ({exc})") from None
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    public_jwk = {"kty": kty, **{k: jwk[k] for k in _PUBLIC_FIELDS[str(kty)]}, "alg": alg, "use": "sig"}
    if kid is not None:
        public_jwk["kid"] = kid
    return SigningKey(kid, alg, private, private.public_key(), public_jwk)


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
