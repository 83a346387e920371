"""JWT verification: every 401 case with Supabase's exact bodies, the keys, and the verification cache."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from edgecli.config import DEFAULT_JWT_SECRET
from edgecli.host import auth
from edgecli.host.auth import AuthFailure, Verifier, claims_header, make_key

SECRET = "a-test-secret-long-enough-for-hs512-" + "x" * 40

# Supabase's published local keys for its default secret: `supabase status` prints exactly these.
SUPABASE_LOCAL_ANON = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4"
    "MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0"
)


def _failure(verifier: Verifier, header: str | None) -> AuthFailure:
    with pytest.raises(AuthFailure) as info:
        verifier.verify(header)
    assert info.value.status == 401
    return info.value


def _token(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    failure = _failure(Verifier(SECRET), header)
    assert failure.body == b'{"msg":"Error: Missing authorization header"}'


@pytest.mark.timeout(5)
@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", make_key(SECRET, "anon")])
def test_not_bearer(header: str) -> None:
    failure = _failure(Verifier(SECRET), header)
    assert failure.body == b'{"msg":"Error: Auth header is not \'Bearer {token}\'"}'
    assert json.loads(failure.body) == {"msg": "Error: Auth header is not 'Bearer {token}'"}


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer " + _token({"role": "anon"}, secret="another-secret-that-is-32-characters-long"),
        "Bearer " + _token({"role": "anon", "exp": int(time.time()) - 10}),
        "Bearer " + _token({"role": "anon", "nbf": int(time.time()) + 3600}),
        "Bearer " + _token({"role": "anon"}, algorithm="HS512"),
    ],
    ids=["no-token", "empty", "garbage", "not-base64", "bad-signature", "expired", "not-yet", "hs512"],
)
def test_invalid_jwt(header: str) -> None:
    assert _failure(Verifier(SECRET), header).body == b'{"msg":"Invalid JWT"}'


@pytest.mark.timeout(5)
def test_unsigned_token_is_invalid() -> None:
    unsigned = jwt.encode({"role": "service_role"}, None, algorithm="none")
    assert _failure(Verifier(SECRET), f"Bearer {unsigned}").body == b'{"msg":"Invalid JWT"}'


@pytest.mark.timeout(5)
@pytest.mark.parametrize("role", ["anon", "service_role"])
def test_valid_keys(role: str) -> None:
    claims = Verifier(SECRET).verify(f"Bearer {make_key(SECRET, role)}")
    assert claims["role"] == role
    assert claims["iss"] == "supabase-demo"
    assert claims["exp"] > time.time() + 5 * 365 * 24 * 3600


@pytest.mark.timeout(5)
def test_scheme_is_case_insensitive() -> None:
    assert Verifier(SECRET).verify(f"bearer {make_key(SECRET, 'anon')}")["role"] == "anon"


@pytest.mark.timeout(5)
def test_keys_decode_with_the_secret_only() -> None:
    key = make_key(SECRET, "service_role")
    claims = jwt.decode(key, SECRET, algorithms=["HS256"])
    assert claims == {"iss": "supabase-demo", "role": "service_role", "exp": auth.KEY_EXPIRY}
    assert jwt.get_unverified_header(key)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(key, DEFAULT_JWT_SECRET, algorithms=["HS256"])


@pytest.mark.timeout(5)
def test_keys_are_deterministic_and_match_supabase() -> None:
    make_key.cache_clear()
    first = make_key(DEFAULT_JWT_SECRET, "anon")
    make_key.cache_clear()
    assert make_key(DEFAULT_JWT_SECRET, "anon") == first == SUPABASE_LOCAL_ANON
    assert make_key(DEFAULT_JWT_SECRET, "service_role") != first


@pytest.mark.timeout(5)
def test_short_secret_gives_no_python_warning(recwarn: pytest.WarningsRecorder) -> None:
    key = make_key("short", "anon")
    Verifier("short").verify(f"Bearer {key}")
    assert not recwarn.list


@pytest.mark.timeout(5)
def test_claims_header_is_compact_ascii_json() -> None:
    token = _token({"role": "authenticated", "sub": "u1", "name": "Zoë"})
    claims = Verifier(SECRET).verify(f"Bearer {token}")
    header = claims_header(claims)
    assert header == b'{"role":"authenticated","sub":"u1","name":"Zo\\u00eb"}'
    assert json.loads(header) == claims
    # Plain dicts (not from a Verifier) work too.
    assert claims_header({"a": [1, 2]}) == b'{"a":[1,2]}'


@pytest.mark.timeout(5)
def test_cache_hit_skips_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = Verifier(SECRET)
    header = f"Bearer {make_key(SECRET, 'anon')}"
    first = verifier.verify(header)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(jwt, "decode", fail)
    assert verifier.verify(header) is first


@pytest.mark.timeout(5)
def test_cache_honours_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    verifier = Verifier(SECRET)
    header = f"Bearer {_token({'role': 'anon', 'exp': int(now) + 60})}"
    assert verifier.verify(header)["role"] == "anon"
    monkeypatch.setattr(auth.time, "time", lambda: now + 61)
    assert _failure(verifier, header).body == b'{"msg":"Invalid JWT"}'
    assert not verifier._cache  # dropped, so the next request decodes (and PyJWT refuses) it again


@pytest.mark.timeout(5)
def test_cache_is_bounded_lru() -> None:
    verifier = Verifier(SECRET, cache_size=2)
    headers = [f"Bearer {_token({'sub': str(i)})}" for i in range(3)]
    verifier.verify(headers[0])
    verifier.verify(headers[1])
    verifier.verify(headers[0])  # most recently used: survives the next insertion
    verifier.verify(headers[2])
    cached = list(verifier._cache)
    assert len(cached) == 2
    assert headers[0].removeprefix("Bearer ") in cached
    assert headers[1].removeprefix("Bearer ") not in cached


@pytest.mark.timeout(5)
def test_failures_are_not_cached() -> None:
    verifier = Verifier(SECRET)
    _failure(verifier, "Bearer garbage")
    assert not verifier._cache


@pytest.mark.timeout(5)
def test_a_cached_token_never_vouches_for_a_forged_or_foreign_one() -> None:
    verifier = Verifier(SECRET)
    good = _token({"role": "anon", "sub": "a"})
    assert verifier.verify(f"Bearer {good}")["sub"] == "a"
    head, payload, signature = good.split(".")
    forged_signature = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    _, elevated, _ = _token({"role": "service_role", "sub": "a"}).split(".")
    for forged in (
        forged_signature,  # the same claims, another signature
        f"{head}.{elevated}.{signature}",  # other claims under the cached token's signature
        _token({"role": "anon", "sub": "a"}, secret="another secret of at least 32 chars!"),
    ):
        assert _failure(verifier, f"Bearer {forged}").body == b'{"msg":"Invalid JWT"}'
    assert list(verifier._cache) == [good]  # and none of them was cached
