"""Signing keys as configuration: the JWKs of `[auth] signing_keys_path` become `SigningKey`s.

They live with the config (a `Config` holds them); verifying and minting with them is host/auth.py's and
host/signing_keys.py's. PyJWT, and the cryptography it loads, is imported only when a key is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The algorithm each key type signs with; a token is only ever checked with its own key type's algorithm.
ALGORITHM_OF_KTY: Mapping[str, str] = {"EC": "ES256", "RSA": "RS256"}
_PUBLIC_FIELDS: Mapping[str, tuple[str, ...]] = {"EC": ("crv", "x", "y"), "RSA": ("n", "e")}


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
