"""JWT verification for `verify_jwt` functions, and the project's anon / service_role keys.

What Supabase's local edge runtime does, byte for byte where users can see it:

- `Authorization: Bearer <jwt>`, verified HS256 with the project's JWT secret (`[auth] jwt_secret`, else
  Supabase's local default), or ES256 / RS256 with the public part of a signing key
  (`[auth] signing_keys_path`). The token's `alg` (and `kid`, when it has one) picks the key, and only a
  key of that algorithm's type is tried: an HS256 token is never checked against a public key, an
  asymmetric one never against the secret, and `alg: none` never passes. The signature and `exp` / `nbf`
  are checked; any failure is 401.
- The new API keys (`sb_publishable_...`, `sb_secret_...`) are not JWTs, and, as on Supabase, the
  check does not accept them: a function called with one sets `verify_jwt = false` and checks the key
  itself (`edgecli new --auth apikey`).
- The three 401 bodies are exactly Supabase's: missing header, a header that is not `Bearer <token>`,
  and `Invalid JWT` for everything else (garbage, bad signature, expired, wrong algorithm).

How the verified claims reach a function: the relay sends them to the worker as the request header
`x-edgecli-jwt-claims`, the claims as compact JSON (ASCII, `ensure_ascii`). Inside a function:

    claims = json.loads(request.headers["x-edgecli-jwt-claims"])   # e.g. claims["role"] == "anon"

The header is present only when the function verifies JWTs; the relay drops any value a client sent
itself, so a function can trust it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecli.config.keys import SigningKey

ALGORITHM = "HS256"
# The `exp` of Supabase's published local demo keys (2032-11-10): far in the future, and fixed so the
# keys `serve` prints are the same on every run and match what `invoke` sends.
KEY_EXPIRY = 1983812996
KEY_ISSUER = "supabase-demo"
CACHE_SIZE = 1024

MISSING_HEADER = b'{"msg":"Error: Missing authorization header"}'
NOT_BEARER = b'{"msg":"Error: Auth header is not \'Bearer {token}\'"}'
INVALID_JWT = b'{"msg":"Invalid JWT"}'


class AuthFailure(Exception):
    """A request failed JWT verification; the relay answers `status` with `body` (JSON) as is."""

    status = 401

    def __init__(self, body: bytes) -> None:
        super().__init__(body.decode())
        self.body = body


@lru_cache(maxsize=32)
def make_key(secret: str, role: str) -> str:
    """An HS256 API key for `role` (`anon`, `service_role`), shaped like Supabase's local keys.

    Deterministic for a given secret and role: no `iat`, a fixed `exp`, and the header PyJWT writes.
    Signed here with hmac rather than PyJWT, whose import (it loads cryptography) would be most of
    `edgecli invoke`'s start-up.
    """
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = _b64url(
        json.dumps({"iss": KEY_ISSUER, "role": role, "exp": KEY_EXPIRY}, separators=(",", ":")).encode()
    )
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@contextmanager
def _quiet_key_length() -> Iterator[None]:
    """Silence PyJWT's short-HMAC-key warning: the secret's length is the config loader's to judge, and a
    Python warning on the server's stderr is no way to tell a user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The HMAC key is")
        yield


class Claims(dict[str, Any]):
    """Verified claims plus their header value, computed once per token. Treat as read-only: the same
    object is handed out for every request carrying the same token."""

    header: bytes


def claims_header(claims: dict[str, Any]) -> bytes:
    """The `x-edgecli-jwt-claims` header value for `claims` (compact JSON, ASCII).

    For claims returned by `Verifier.verify` this is a cached attribute, so the hot path does no JSON work.
    """
    if isinstance(claims, Claims):
        return claims.header
    return _encode_claims(claims)


def _encode_claims(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class _Entry:
    claims: Claims
    expires: float | None  # the token's `exp`; None when it has none


class Verifier:
    """Checks `Authorization` headers against one secret.

    Successful verifications are cached by token string (LRU, `CACHE_SIZE` entries) because every
    request of a client repeats the same token; `exp` is still honoured on each hit. Failures are not
    cached: they are the rare path. Meant for one event loop (the relay), so it takes no lock.
    """

    def __init__(
        self, secret: str, signing_keys: tuple[SigningKey, ...] = (), cache_size: int = CACHE_SIZE
    ) -> None:
        self._secret = secret
        self._signing_keys = signing_keys
        self._asymmetric_kids = frozenset(k.kid for k in signing_keys if k.kid)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims, or AuthFailure with the body Supabase would send."""
        token = _bearer_token(authorization)
        entry = self._cache.get(token)
        if entry is not None:
            if entry.expires is not None and entry.expires <= time.time():
                del self._cache[token]
                raise AuthFailure(INVALID_JWT)
            self._cache.move_to_end(token)
            return entry.claims
        entry = self._decode(token)
        self._cache[token] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry.claims

    def _decode(self, token: str) -> _Entry:
        import jwt  # here, not at the top: make_key's callers (invoke) need no PyJWT

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthFailure(INVALID_JWT) from None
        payload = self._verified_payload(token, header)
        claims = Claims(payload)
        claims.header = _encode_claims(payload)
        exp = payload.get("exp")
        # PyJWT has already rejected a non-numeric `exp`, so a present one is a number here.
        return _Entry(claims, float(exp) if exp is not None else None)

    def _verified_payload(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        import jwt

        alg, kid = header.get("alg"), header.get("kid")
        keys: list[Any]
        if alg == ALGORITHM:
            # A kid naming an asymmetric key with alg HS256 is the key-confusion attack: refuse it.
            keys = [] if kid in self._asymmetric_kids else [self._secret]
        else:
            keys = [k.public for k in self._signing_keys if k.alg == alg and (kid is None or k.kid == kid)]
        for key in keys:
            try:
                with _quiet_key_length():
                    # No audience check, as Supabase's: user tokens say `aud: authenticated`.
                    payload: dict[str, Any] = jwt.decode(
                        token, key, algorithms=[str(alg)], options={"verify_aud": False}
                    )
                return payload
            except jwt.InvalidTokenError:
                continue
        raise AuthFailure(INVALID_JWT)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthFailure(MISSING_HEADER)
    scheme, _, token = authorization.partition(" ")
    # Auth schemes are case-insensitive (RFC 9110 §11.1), so `bearer` is accepted as well.
    if scheme.lower() != "bearer":
        raise AuthFailure(NOT_BEARER)
    token = token.strip()
    if not token:
        raise AuthFailure(INVALID_JWT)
    return token
