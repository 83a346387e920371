"""Real-process tests of production parity: JWT verification over HTTP and the env a function sees.

One `edgecli serve` (JWT on, a custom secret) is shared by the module's tests to keep them fast; the
`--no-verify-jwt` / `--env-file` cases start their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from serving import Served, make_project

from edgecli.config import DEFAULT_DB_URL, DEFAULT_JWT_SECRET
from edgecli.host.auth import make_key

SECRET = "parity-test-secret-with-more-than-32-characters"
ANON = make_key(SECRET, "anon")
SERVICE = make_key(SECRET, "service_role")

# Reports what a function can see: the method, the claims header and its whole environment.
PROBE = """
import os
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({
        "method": req.method,
        "claims": req.headers.get("x-edgecli-jwt-claims"),
        "env": dict(os.environ),
    })

serve(handler)
"""

CONFIG = f"""
[auth]
jwt_secret = "{SECRET}"

[edge_runtime]
policy = "per_worker"
max_parallelism = 1

[edge_runtime.secrets]
API_KEY = "env(PARITY_HOST_SECRET)"
LAYERED = "secret"
SECRET_ONLY = "secret"

[functions.open]
verify_jwt = false
"""

COMMON_ENV = """\
LAYERED=common
COMMON=common
SUPABASE_URL=http://evil.example
this line is not a binding
"""
OWN_ENV = "LAYERED=own\nOWN=guarded\n"
HOST_ENV = {"PARITY_HOST_SECRET": "s3cret", "PARITY_HOST_STRAY": "stray"}


def _project(root: Path) -> Path:
    project = make_project(root, {"guarded": PROBE, "open": PROBE}, CONFIG)
    functions = project / "supabase" / "functions"
    (functions / ".env").write_text(COMMON_ENV)
    (functions / "guarded" / ".env").write_text(OWN_ENV)
    return project


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project = _project(tmp_path_factory.mktemp("parity"))
    with Served(project, verify_jwt=True, json_output=False, env=HOST_ENV) as served:
        yield served


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, b'{"msg":"Error: Missing authorization header"}'),
        ({"Authorization": f"Basic {ANON}"}, b'{"msg":"Error: Auth header is not \'Bearer {token}\'"}'),
        ({"Authorization": ANON}, b'{"msg":"Error: Auth header is not \'Bearer {token}\'"}'),
        ({"Authorization": "Bearer not-a-jwt"}, b'{"msg":"Invalid JWT"}'),
        # Supabase's stock anon key is signed with the default secret, not this project's.
        ({"Authorization": f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}"}, b'{"msg":"Invalid JWT"}'),
        (
            {"Authorization": "Bearer " + jwt.encode({"role": "anon", "exp": int(time.time()) - 5}, SECRET)},
            b'{"msg":"Invalid JWT"}',
        ),
    ],
    ids=["missing", "basic", "no-scheme", "garbage", "other-secret", "expired"],
)
def test_jwt_failures(srv: Served, headers: dict[str, str], expected: bytes) -> None:
    r = srv.post("guarded", headers=headers, json={"x": 1})
    assert r.status_code == 401
    assert r.content == expected
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("key", "role"), [(ANON, "anon"), (SERVICE, "service_role")])
def test_valid_keys_reach_the_function_with_their_claims(srv: Served, key: str, role: str) -> None:
    r = srv.get("guarded", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    claims = json.loads(r.json()["claims"])
    assert claims == {"iss": "supabase-demo", "role": role, "exp": jwt.decode(key, SECRET, ["HS256"])["exp"]}


@pytest.mark.timeout(90)
def test_a_client_cannot_forge_the_claims_header(srv: Served) -> None:
    forged = {"x-edgecli-jwt-claims": '{"role":"service_role"}'}
    r = srv.get("guarded", headers={"Authorization": f"Bearer {ANON}", **forged})
    assert json.loads(r.json()["claims"])["role"] == "anon"
    r = srv.get("open", headers=forged)  # no verification here, so no claims at all
    assert r.status_code == 200, r.text
    assert r.json()["claims"] is None


@pytest.mark.timeout(90)
def test_options_is_never_checked(srv: Served) -> None:
    r = srv.request("OPTIONS", "guarded")
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "OPTIONS"


@pytest.mark.timeout(90)
def test_verify_jwt_false_per_function(srv: Served) -> None:
    r = srv.get("open")
    assert r.status_code == 200, r.text
    r = srv.get("open", headers={"Authorization": "Bearer garbage"})  # not checked at all
    assert r.status_code == 200, r.text


@pytest.mark.timeout(90)
def test_serve_prints_the_projects_keys(srv: Served) -> None:
    out = srv.output()
    assert ANON in out
    assert SERVICE in out
    assert make_key(DEFAULT_JWT_SECRET, "anon") not in out


@pytest.mark.timeout(90)
def test_env_layers_seen_from_inside(srv: Served) -> None:
    env = srv.get("guarded", headers={"Authorization": f"Bearer {ANON}"}).json()["env"]
    assert env["SUPABASE_URL"] == f"http://127.0.0.1:{srv.port}"
    assert env["SUPABASE_ANON_KEY"] == ANON
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == SERVICE
    assert env["SUPABASE_DB_URL"] == DEFAULT_DB_URL
    assert env["API_KEY"] == "s3cret"  # env(NAME) read from serve's host environment
    assert env["SECRET_ONLY"] == "secret"
    assert env["COMMON"] == "common"
    assert env["LAYERED"] == "own"  # secrets < functions/.env < functions/guarded/.env
    assert env["OWN"] == "guarded"
    assert "PARITY_HOST_STRAY" not in env
    assert "PARITY_HOST_SECRET" not in env
    assert "PATH" in env

    other = srv.get("open").json()["env"]
    assert other["LAYERED"] == "common"
    assert "OWN" not in other


@pytest.mark.timeout(90)
def test_env_file_warnings_name_file_and_line(srv: Served) -> None:
    out = srv.output()
    common = str(srv.project / "supabase" / "functions" / ".env")
    assert f"{common}:3:" in out and "SUPABASE_URL" in out
    assert f"{common}:4:" in out and "this line is not a binding" in out


@pytest.mark.timeout(40)
def test_no_verify_jwt_and_env_file_flags(tmp_path: Path) -> None:
    project = _project(tmp_path)
    alt = tmp_path / "alt.env"
    alt.write_text("COMMON=alt\nALT_ONLY=1\n")
    with Served(project, "--env-file", str(alt), verify_jwt=False, env=HOST_ENV) as served:
        r = served.post("guarded", json={})  # no Authorization header at all
        assert r.status_code == 200, r.text
        assert r.json()["claims"] is None
        env = r.json()["env"]
        assert env["COMMON"] == "alt"  # --env-file replaces functions/.env
        assert env["ALT_ONLY"] == "1"
        assert env["LAYERED"] == "own"
        assert env["SUPABASE_URL"] == f"http://127.0.0.1:{served.port}"
