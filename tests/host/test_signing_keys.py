"""Asymmetric signing keys and the new API keys: ES256/RS256 accepted against the project's keys, every
algorithm confusion refused, and the values functions get injected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from edgecli.config.keys import SigningKeyError, load_signing_keys
from edgecli.host.auth import AuthFailure, Verifier
from edgecli.host.signing_keys import PUBLISHABLE_KEY, SECRET_KEY, api_keys_env, jwks_json, mint_token

SECRET = "a-test-secret-long-enough-for-hs256-" + "x" * 40
CLAIMS = {"sub": "user-1", "role": "authenticated", "aud": "authenticated"}


def ec_jwk(kid: str = "ec-key") -> dict[str, Any]:
    """A private JWK as `supabase gen signing-key` writes one."""
    jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig", "key_ops": ["sign", "verify"], "ext": True}


def rsa_jwk(kid: str = "rsa-key") -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig", "key_ops": ["sign", "verify"], "ext": True}


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    loaded = load_signing_keys([ec_jwk(), rsa_jwk()])
    return {"ec": loaded[0], "rsa": loaded[1], "all": loaded}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_hs256(header: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed with `key`, built by hand: PyJWT refuses to use a PEM as an HMAC key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(CLAIMS).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _refused(verifier: Verifier, token: str) -> None:
    with pytest.raises(AuthFailure) as info:
        verifier.verify(f"Bearer {token}")
    assert info.value.body == b'{"msg":"Invalid JWT"}'


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_asymmetric_tokens_are_accepted(keys: dict[str, Any], kind: str) -> None:
    token = mint_token(CLAIMS, key=keys[kind])
    assert jwt.get_unverified_header(token)["alg"] == ("ES256" if kind == "ec" else "RS256")
    claims = Verifier(SECRET, keys["all"]).verify(f"Bearer {token}")
    assert claims["sub"] == "user-1"


@pytest.mark.timeout(10)
def test_a_token_without_kid_is_checked_against_keys_of_its_algorithm(keys: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, keys["rsa"].private, algorithm="RS256")
    assert Verifier(SECRET, keys["all"]).verify(f"Bearer {token}")["role"] == "authenticated"


@pytest.mark.timeout(10)
def test_hs256_with_the_project_secret_is_still_accepted_beside_the_keys(keys: dict[str, Any]) -> None:
    token = mint_token(CLAIMS, secret=SECRET)
    assert Verifier(SECRET, keys["all"]).verify(f"Bearer {token}")["sub"] == "user-1"


@pytest.mark.timeout(10)
def test_hs256_naming_an_asymmetric_key_is_refused(keys: dict[str, Any]) -> None:
    # Signed with the project secret but claiming the EC key's kid: never verified as HS256.
    _refused(Verifier(SECRET, keys["all"]), _forged_hs256({"alg": "HS256", "kid": "ec-key"}, SECRET.encode()))


@pytest.mark.timeout(10)
def test_hs256_signed_with_something_else_is_refused_where_only_keys_would_match(
    keys: dict[str, Any],
) -> None:
    other = mint_token(CLAIMS, secret="not-the-project-secret-but-long-enough-anyway")
    _refused(Verifier(SECRET, keys["all"]), other)


@pytest.mark.timeout(10)
def test_a_public_key_used_as_an_hs256_secret_is_refused(keys: dict[str, Any]) -> None:
    pem = keys["rsa"].public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = Verifier(SECRET, keys["all"])
    _refused(verifier, _forged_hs256({"alg": "HS256", "typ": "JWT"}, pem))
    _refused(verifier, _forged_hs256({"alg": "HS256", "kid": "rsa-key"}, pem))


@pytest.mark.timeout(10)
def test_alg_none_is_refused(keys: dict[str, Any]) -> None:
    for header in ({"alg": "none"}, {"alg": "none", "kid": "ec-key"}, {"alg": "None"}):
        token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(CLAIMS).encode())}."
        _refused(Verifier(SECRET, keys["all"]), token)


@pytest.mark.timeout(10)
def test_the_algorithm_must_match_the_key_type(keys: dict[str, Any]) -> None:
    # An RS256 token naming the EC key's kid (signed by the RSA key) matches no key of its type.
    token = jwt.encode(CLAIMS, keys["rsa"].private, algorithm="RS256", headers={"kid": "ec-key"})
    _refused(Verifier(SECRET, keys["all"]), token)


@pytest.mark.timeout(10)
def test_asymmetric_tokens_are_refused_without_signing_keys(keys: dict[str, Any]) -> None:
    _refused(Verifier(SECRET), mint_token(CLAIMS, key=keys["ec"]))


@pytest.mark.timeout(10)
def test_expired_asymmetric_token_is_refused(keys: dict[str, Any]) -> None:
    _refused(Verifier(SECRET, keys["all"]), mint_token(CLAIMS, key=keys["ec"], lifetime_s=-10))


@pytest.mark.timeout(10)
def test_api_keys_are_not_jwts_and_are_refused() -> None:
    # As on Supabase: verify_jwt takes JWTs only; a function called with an API key checks it itself.
    for key in (PUBLISHABLE_KEY, SECRET_KEY):
        _refused(Verifier(SECRET), key)


@pytest.mark.timeout(10)
def test_injected_jwks_holds_public_parts_and_the_secret(keys: dict[str, Any]) -> None:
    jwks = json.loads(jwks_json(keys["all"], SECRET))["keys"]
    assert [k["kty"] for k in jwks] == ["EC", "RSA", "oct"]
    assert all("d" not in k and "p" not in k for k in jwks)
    assert base64.urlsafe_b64decode(jwks[2]["k"] + "==") == SECRET.encode()
    assert json.loads(api_keys_env()["SUPABASE_SECRET_KEYS"]) == {"default": SECRET_KEY}
    assert json.loads(api_keys_env()["SUPABASE_PUBLISHABLE_KEYS"]) == {"default": PUBLISHABLE_KEY}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("jwk", "problem"),
    [
        ({"kty": "oct", "k": "abc"}, "kty"),
        ({**ec_jwk(), "alg": "RS256"}, "signs ES256"),
        ({k: v for k, v in ec_jwk().items() if k != "d"}, "no private part"),
        ({**ec_jwk(), "x": "AAAA"}, "not a valid EC private key"),
    ],
)
def test_unusable_keys_are_explained(jwk: dict[str, Any], problem: str) -> None:
    with pytest.raises(SigningKeyError, match=problem):
        load_signing_keys([jwk])


@pytest.mark.timeout(10)
def test_mint_for_signs_what_the_projects_verifier_accepts(keys: dict[str, Any]) -> None:
    from edgecli.config import Config
    from edgecli.host.signing_keys import mint_for

    config = Config(project_dir=Path("."), jwt_secret=SECRET, signing_keys=keys["all"])
    verifier = Verifier(SECRET, keys["all"])
    for algorithm, expected in ((None, "ES256"), ("HS256", "HS256"), ("ES256", "ES256"), ("RS256", "RS256")):
        token = mint_for(config, CLAIMS, algorithm=algorithm)
        assert jwt.get_unverified_header(token)["alg"] == expected
        assert verifier.verify(f"Bearer {token}")["sub"] == "user-1"
    assert (
        jwt.get_unverified_header(mint_for(Config(project_dir=Path("."), jwt_secret=SECRET), CLAIMS))["alg"]
        == "HS256"
    )
    with pytest.raises(ValueError, match="no RS256 key"):
        mint_for(
            Config(project_dir=Path("."), jwt_secret=SECRET, signing_keys=(keys["ec"],)),
            CLAIMS,
            algorithm="RS256",
        )


@pytest.mark.timeout(10)
def test_keys_read_twice_from_the_same_file_are_equal() -> None:
    # The reloader compares configs: the same file must not look like a changed setting on every reload.
    jwks = [ec_jwk(), rsa_jwk()]
    assert load_signing_keys(jwks) == load_signing_keys(jwks)
    assert load_signing_keys(jwks) != load_signing_keys([ec_jwk(), jwks[1]])
