"""Real-process tests of today's Supabase project shape: asymmetric signing keys and the new API keys over
HTTP, the env that goes with them, and `static_files` read by a function and reloaded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from serving import Served, make_project, wait_until

from edgecli.config.keys import load_signing_keys
from edgecli.host.signing_keys import PUBLISHABLE_KEY, SECRET_KEY, mint_token

PROBE = """
import os
from starlette.responses import JSONResponse


async def handler(req):
    env = {k: v for k, v in os.environ.items() if k.startswith("SUPABASE_")}
    return JSONResponse({"claims": req.headers.get("x-edgecli-jwt-claims"), "env": env})
"""
SITE = """
from pathlib import Path
from starlette.responses import PlainTextResponse

# Read once, at import: a new response after an edit shows that the worker was recycled. As on Supabase,
# a static file is read at its path relative to the function's own folder (the worker's cwd).
CONTENT = open("page.html").read() + "|" + (Path(__file__).parent / "../../static/note.txt").read_text()


async def handler(req):
    return PlainTextResponse(CONTENT)
"""
CONFIG = """
[auth]
signing_keys_path = "./signing_keys.json"

[edge_runtime]
max_parallelism = 1

[functions.site]
static_files = ["./functions/site/*.html", "./static/*.txt"]
"""


def _jwks() -> list[dict[str, object]]:
    ec_key = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    rsa_key = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return [{**ec_key, "kid": "ec-1", "alg": "ES256"}, {**rsa_key, "kid": "rsa-1", "alg": "RS256"}]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged_hs256(header: dict[str, str], key: bytes) -> str:
    claims = json.dumps({"role": "service_role"}).encode()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.timeout(90)
def test_signing_keys_api_keys_and_static_files(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"probe": PROBE, "site": SITE}, CONFIG)
    supabase = root / "supabase"
    jwks = _jwks()
    (supabase / "signing_keys.json").write_text(json.dumps(jwks))
    (supabase / "functions" / "site" / "page.html").write_text("<p>v1</p>")
    (supabase / "static").mkdir()
    (supabase / "static" / "note.txt").write_text("note1")
    keys = load_signing_keys(jwks)
    with Served(root, verify_jwt=True) as srv:
        for key in keys:
            token = mint_token({"sub": "u1", "role": "authenticated"}, key=key)
            response = srv.get("probe", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            assert json.loads(response.json()["claims"])["sub"] == "u1"
        # HS256 "signed" with the EC key's public x coordinate and naming its kid: refused.
        forged = _forged_hs256({"alg": "HS256", "kid": "ec-1"}, str(jwks[0]["x"]).encode())
        refused = srv.get("probe", headers={"authorization": f"Bearer {forged}"})
        assert (refused.status_code, refused.json()) == (401, {"msg": "Invalid JWT"})

        # The new API keys are not JWTs: verify_jwt refuses them, as Supabase does.
        by_apikey = srv.get("probe", headers={"apikey": SECRET_KEY, "authorization": f"Bearer {SECRET_KEY}"})
        assert (by_apikey.status_code, by_apikey.json()) == (401, {"msg": "Invalid JWT"})
        env = srv.get("probe", headers={"authorization": f"Bearer {token}"}).json()["env"]
        assert json.loads(env["SUPABASE_PUBLISHABLE_KEYS"]) == {"default": PUBLISHABLE_KEY}
        assert json.loads(env["SUPABASE_SECRET_KEYS"]) == {"default": SECRET_KEY}
        injected = json.loads(env["SUPABASE_JWKS"])["keys"]
        assert [(k.get("kid"), k["kty"]) for k in injected] == [
            ("ec-1", "EC"),
            ("rsa-1", "RSA"),
            (None, "oct"),
        ]
        assert all("d" not in k for k in injected)

        anon = mint_token({"role": "anon"}, secret="super-secret-jwt-token-with-at-least-32-characters-long")
        site = {"authorization": f"Bearer {anon}"}
        assert srv.get("site", headers=site).text == "<p>v1</p>|note1"
        (supabase / "static" / "note.txt").write_text("note2")
        wait_until(lambda: srv.get("site", headers=site).text == "<p>v1</p>|note2", 20, what="note2")
        reload = srv.wait_event(lambda e: "site" in e["message"], kind="reload")
        assert reload["changes"] == ["supabase/static/note.txt"] and "probe" not in reload["message"]
    out = srv.output()
    assert "static_files" not in out  # accepted without a warning
    assert "restart serve" not in out  # the same signing keys read again are not a changed setting
