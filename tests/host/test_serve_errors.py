"""Real-process tests: every status code serve answers with (docs/architecture.md, "The life of a
request"), and a broken function never takes serve down."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

HELLO = """
import os
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({"pid": os.getpid(), "path": req.url.path})

serve(handler)
"""

MISBEHAVING = """
import os
from starlette.responses import JSONResponse

async def handler(req):
    what = req.query_params.get("do")
    if what == "raise":
        raise ValueError("handler exploded")
    if what == "dict":
        return {"not": "a response"}
    if what == "exit":
        os._exit(3)
    if what == "raw":
        os.write(1, b"raw stdout line\\n")
        os.write(2, b"raw stderr line\\n")
    return JSONResponse({"pid": os.getpid()})
"""

BROKEN_IMPORT = """
import this_module_does_not_exist
"""

NO_HANDLER = """
x = 1
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"

[functions.off]
enabled = false
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    functions = {
        "hello": HELLO,
        "bad": MISBEHAVING,
        "broken": BROKEN_IMPORT,
        "empty": NO_HANDLER,
        "off": HELLO,
        "_shared": "VALUE = 1\n",
    }
    return make_project(tmp_path, functions, CONFIG)


@pytest.mark.timeout(60)
def test_status_codes(project: Path) -> None:
    with Served(project) as srv:
        # 404: unknown, disabled, invalid names, _shared, encoded dot-dot, outside /functions/v1.
        for path in ("nope", "off", "1abc", "_shared", "%2e%2e", "a.b"):
            r = srv.client.get(f"/functions/v1/{path}")
            assert (r.status_code, r.text) == (404, "Function not found"), path
            assert r.headers["x-request-id"]
        assert srv.client.get("/elsewhere").status_code == 404

        # 200 with the URL the client called, and x-request-id echoed when the client sends one.
        r = srv.get("hello", "/a/b", headers={"x-request-id": "my-id-1"})
        assert r.status_code == 200 and r.json()["path"] == "/functions/v1/hello/a/b"
        assert r.headers["x-request-id"] == "my-id-1"

        # 503 BOOT_ERROR: import failure, and a module serving nothing.
        for name, needle in (("broken", "this_module_does_not_exist"), ("empty", "serve(handler)")):
            r = srv.get(name)
            assert r.status_code == 503, name
            assert r.json()["code"] == "BOOT_ERROR" and needle in r.json()["message"]

        # 500 WORKER_ERROR: handler raised, returned a non-response, the worker died mid-request. The
        # body points at the logs instead of carrying the error's text.
        for what in ("raise", "dict", "exit"):
            r = srv.get("bad", params={"do": what})
            assert r.status_code == 500, what
            assert r.json()["code"] == r.headers["sb-error-code"] == "WORKER_ERROR"
            assert f"edgecli logs --request {r.headers['x-request-id']}" in r.json()["message"]
            assert "exploded" not in r.text
        for name in ("broken", "empty"):
            assert srv.get(name).headers["sb-error-code"] == "BOOT_ERROR"
        assert srv.get("hello").status_code == 200  # serve is still fine


@pytest.mark.timeout(60)
def test_broken_function_is_not_respawned_in_a_loop(project: Path) -> None:
    with Served(project) as srv:
        for _ in range(5):
            assert srv.get("broken").status_code == 503
        srv.wait_event(kind="boot_error", function="broken")
        errors = srv.events(kind="boot_error", function="broken")
        assert len(errors) == 1, errors
        assert "ModuleNotFoundError" in errors[0]["error"]  # the traceback is in the log, once
        assert "loader.py" not in errors[0]["error"] and "<frozen" not in errors[0]["error"]
        assert "-m pip install this_module_does_not_exist" in errors[0]["message"]


@pytest.mark.timeout(60)
def test_killed_worker_is_replaced_on_the_next_request(project: Path) -> None:
    with Served(project) as srv:
        before = srv.get("bad").json()["pid"]
        assert srv.get("bad", params={"do": "exit"}).status_code == 500
        after = srv.get("bad")
        assert after.status_code == 200 and after.json()["pid"] != before
        crash = srv.wait_event(kind="shutdown", function="bad")
        assert crash["reason"] == "exited with status 3"


@pytest.mark.timeout(60)
def test_uncaught_exception_and_raw_fd_writes_are_logged(project: Path) -> None:
    with Served(project) as srv:
        r = srv.get("bad", params={"do": "raise"})
        request_id = r.headers["x-request-id"]
        tb = srv.wait_event(kind="log", level="error", request=request_id)
        assert "Traceback" in tb["message"] and "handler exploded" in tb["message"]
        assert "runtime/worker.py" not in tb["message"] and "loader.py" not in tb["message"]
        r = srv.get("bad", params={"do": "dict"})
        mistake = srv.wait_event(kind="log", level="error", request=r.headers["x-request-id"])
        assert (
            mistake["message"].startswith("handler() in index.py line ")
            and "Traceback" not in mistake["message"]
        )
        r = srv.get("bad", params={"do": "raw"})
        out = srv.wait_event(kind="log", message="raw stdout line")
        err = srv.wait_event(kind="log", message="raw stderr line")
        assert out["level"] == "info" and err["level"] == "error"
        assert out["request"] == r.headers["x-request-id"]  # the only request in flight


@pytest.mark.timeout(60)
def test_unknown_function_name_on_the_command_line_is_a_usage_error(project: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edgecli", "serve", "nope", "--workdir", str(project)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_named_functions_restrict_what_is_served(project: Path) -> None:
    with Served(project, "hello") as srv:
        assert srv.get("hello").status_code == 200
        assert srv.get("bad").status_code == 404
        wait_until(lambda: srv.events(kind="boot", function="hello"), what="hello booted")
        assert not srv.events(kind="boot_error")
