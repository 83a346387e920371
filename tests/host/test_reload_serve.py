"""Real-process hot reload: a running `edgecli serve`, files edited under it, responses and events checked.

Every test gets a response before it edits anything: serve's socket listens before startup is done, and
only a response proves that the watch is on.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from serving import Served, make_project, replace_function, wait_until, write_function

pytestmark = pytest.mark.timeout(60)

# Every function says which version of its code and which worker answered, and what it sees of its env.
VERSIONED = """
import os
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({"version": VERSION, "pid": os.getpid(), "greeting": os.environ.get("GREETING")})

serve(handler)
"""
SHARED_USER = """
import os
from starlette.responses import JSONResponse
from edgecli import serve
from _shared.common import VALUE

async def handler(req):
    return JSONResponse({"value": VALUE, "pid": os.getpid()})

serve(handler)
"""
BACKGROUND = """
import asyncio, os
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime

async def job(seconds):
    await asyncio.sleep(seconds)
    print("job done")

async def handler(req):
    EdgeRuntime.wait_until(job(float(req.query_params.get("job", "1"))))
    await asyncio.sleep(float(req.query_params.get("sleep", "0")))
    return JSONResponse({"version": VERSION, "pid": os.getpid()})
"""
CONFIG = """\
[edge_runtime]
policy = "POLICY"
graceful_exit_timeout_sec = 3
"""


def versioned(version: Any) -> str:
    return VERSIONED.replace("VERSION", repr(version))


def config(policy: str = "per_worker", extra: str = "") -> str:
    return CONFIG.replace("POLICY", policy) + textwrap.dedent(extra)


def set_config(root: Path, text: str) -> None:
    (root / "supabase" / "config.toml").write_text(text)


def serves(srv: Served, name: str, key: str, value: Any) -> dict[str, Any]:
    """Wait until `name` answers 200 with body[key] == value; returns the body."""

    def check() -> dict[str, Any] | None:
        r = srv.get(name)
        body = r.json() if r.status_code == 200 else {}
        return body if body.get(key) == value else None

    return wait_until(check, 10, what=f"{name} to serve {key}={value!r}\n{srv.output()[-3000:]}")


def status_becomes(srv: Served, name: str, status: int) -> None:
    wait_until(
        lambda: srv.get(name).status_code == status, 10, what=f"{name} → {status}\n{srv.output()[-3000:]}"
    )


def reloads(srv: Served) -> list[dict[str, Any]]:
    return srv.events(kind="reload")


@pytest.mark.parametrize("policy", ["per_worker", "oneshot", "per_request"])
def test_an_edit_is_served_at_once_and_other_functions_keep_their_workers(
    tmp_path: Path, policy: str
) -> None:
    root = make_project(tmp_path, {"hello": versioned(1), "other": versioned(1)}, config(policy))
    with Served(root) as srv:
        other_before = srv.get("other").json()["pid"]
        assert srv.get("hello").json()["version"] == 1
        write_function(root, "hello", versioned(2))
        serves(srv, "hello", "version", 2)
        event = srv.wait_event(lambda e: "hello" in e["message"], kind="reload")
        assert event["changes"] == ["supabase/functions/hello/index.py"]
        assert event["function"] == "hello"
        assert "reloaded hello: new code ready in " in event["message"]
        if policy != "oneshot":  # a oneshot worker is new for every request anyway
            assert srv.get("other").json()["pid"] == other_before
        assert all("other" not in e["message"] for e in reloads(srv))


def test_a_shared_module_change_reloads_every_function(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"a": SHARED_USER, "b": SHARED_USER}, config())
    shared = root / "supabase" / "functions" / "_shared"
    shared.mkdir()
    (shared / "common.py").write_text("VALUE = 1\n")
    with Served(root) as srv:
        assert srv.get("a").json()["value"] == srv.get("b").json()["value"] == 1
        (shared / "common.py").write_text("VALUE = 2\n")
        serves(srv, "a", "value", 2)
        serves(srv, "b", "value", 2)
        event = srv.wait_event(kind="reload")
        assert event["changes"] == ["supabase/functions/_shared/common.py"]
        assert event["message"].startswith("reloaded 2 functions (a, b): new code ready in ")


def test_env_file_changes_apply(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1), "other": versioned(1)}, config())
    common = root / "supabase" / "functions" / ".env"
    common.write_text("GREETING=hi\n")
    outside = tmp_path / "dev.env"
    outside.write_text("GREETING=from the command line\n")
    with Served(root) as srv:
        assert srv.get("hello").json()["greeting"] == "hi"
        common.write_text("GREETING=hello\n")
        serves(srv, "hello", "greeting", "hello")
        serves(srv, "other", "greeting", "hello")
        own = root / "supabase" / "functions" / "other" / ".env"
        own.write_text("GREETING=mine\n")  # a new per-function file: that function only
        serves(srv, "other", "greeting", "mine")
        assert srv.get("hello").json()["greeting"] == "hello"
    with Served(root, "--env-file", str(outside)) as srv:
        assert srv.get("hello").json()["greeting"] == "from the command line"
        outside.write_text("GREETING=edited\n")
        serves(srv, "hello", "greeting", "edited")


def test_config_block_changes_apply_and_restart_only_settings_say_so(tmp_path: Path) -> None:
    block = "\n[functions.hello]\nverify_jwt = VERIFY\n"
    root = make_project(
        tmp_path,
        {"hello": versioned(1), "other": versioned(1)},
        config(extra=block.replace("VERIFY", "true")),
    )
    with Served(root, verify_jwt=True) as srv:
        assert srv.get("hello").status_code == 401
        set_config(root, config(extra=block.replace("VERIFY", "false")))
        status_becomes(srv, "hello", 200)
        assert srv.get("other").status_code == 401
        assert srv.wait_event(kind="reload")["changes"] == ["supabase/config.toml"]

        secret = '\n[auth]\njwt_secret = "a-new-secret-with-at-least-32-characters"\n'
        set_config(root, config(extra=block.replace("VERIFY", "false") + secret))
        note = srv.wait_event(lambda e: "restart serve to apply" in e["message"], kind="log")
        assert note["level"] == "warning" and "[auth] jwt_secret changed" in note["message"]
        assert "a-new-secret" not in srv.output()
        write_function(root, "hello", versioned(2))  # a later reload does not repeat the note
        serves(srv, "hello", "version", 2)
        srv.wait_event(
            lambda e: "reloaded hello" in e["message"] and "index.py" in e["message"], kind="reload"
        )
        assert len([e for e in srv.events(kind="log") if "restart serve" in e["message"]]) == 1


def test_a_broken_config_is_reported_and_the_old_one_kept_until_fixed(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config())
    with Served(root) as srv:
        assert srv.get("hello").status_code == 200  # answered: serve is past startup, the watch is on
        set_config(root, config(extra="\n[functions.hello]\nverify_jwt = maybe\n"))
        error = srv.wait_event(lambda e: e["level"] == "error", kind="log")
        assert error["message"].startswith("supabase/config.toml:")
        assert "previous configuration" in error["message"]
        assert srv.get("hello").status_code == 200
        assert srv.proc is not None and srv.proc.poll() is None
        set_config(root, config(policy="oneshot"))  # fixed, and with a new policy
        srv.wait_event(kind="reload")
        pids = {srv.get("hello").json()["pid"] for _ in range(3)}
        assert len(pids) == 3  # oneshot: a fresh worker per request


def test_new_and_deleted_functions(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1), "old": versioned(1)}, config())
    with Served(root) as srv:
        assert srv.get("fresh").status_code == 404
        write_function(root, "fresh", versioned("fresh"))
        serves(srv, "fresh", "version", "fresh")
        announced = srv.wait_event(lambda e: e["message"].startswith("new function fresh:"), kind="log")
        assert announced["message"].endswith(f"{srv.base_url}/functions/v1/fresh")
        shutil.rmtree(root / "supabase" / "functions" / "old")
        status_becomes(srv, "old", 404)
        srv.wait_event(lambda e: "old is no longer served" in e["message"], kind="log")
        assert srv.get("hello").status_code == 200


@pytest.mark.parametrize("policy", ["per_worker", "oneshot", "per_request"])
def test_a_syntax_error_gives_503_once_logged_until_fixed(tmp_path: Path, policy: str) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config(policy))
    with Served(root) as srv:
        assert srv.get("hello").status_code == 200
        # Atomic writes: an in-place write can show the watcher an empty file first (a boot error of
        # its own) when the machine is busy; this test is about one broken version.
        replace_function(root, "hello", versioned(1) + "\ndef broken(:\n")
        status_becomes(srv, "hello", 503)
        for _ in range(3):
            r = srv.get("hello")
            assert r.status_code == 503 and r.json()["code"] == "BOOT_ERROR"
        failed = srv.wait_event(kind="reload")
        assert failed["level"] == "warning" and "hello failed to boot" in failed["message"]
        # Once: not per request, nor per worker booted in parallel (oneshot's spares, per_request's).
        assert len(srv.events(kind="boot_error")) == 1
        replace_function(root, "hello", versioned(2))
        serves(srv, "hello", "version", 2)
        assert srv.proc is not None and srv.proc.poll() is None


def test_an_old_worker_finishes_its_request_and_background_task_after_a_reload(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"bg": BACKGROUND.replace("VERSION", "1")}, config())
    with Served(root) as srv, ThreadPoolExecutor(1) as pool:
        old_pid = srv.get("bg").json()["pid"]
        old_worker = srv.wait_event(kind="task_start")["worker"]
        in_flight = pool.submit(srv.get, "bg", params={"sleep": "1"})
        wait_until(lambda: len(srv.events(kind="task_start")) == 2, what="the slow request to start")
        write_function(root, "bg", BACKGROUND.replace("VERSION", "2"))
        body = serves(srv, "bg", "version", 2)  # new requests: new code, while the old worker drains
        assert body["pid"] != old_pid
        slow = in_flight.result(10)
        assert slow.status_code == 200 and slow.json() == {"version": 1, "pid": old_pid}
        gone = srv.wait_event(lambda e: e["worker"] == old_worker, kind="shutdown")
        assert gone["reason"] == "early_drop"
        started = [e["task"] for e in srv.events(kind="task_start") if e["worker"] == old_worker]
        ended = {e["task"]: e["status"] for e in srv.events(kind="task_end") if e["worker"] == old_worker}
        assert len(started) >= 2 and ended == dict.fromkeys(started, "completed")


def test_an_old_worker_past_graceful_exit_timeout_is_terminated(tmp_path: Path) -> None:
    code = BACKGROUND.replace("VERSION", "1")
    root = make_project(tmp_path, {"bg": code}, config().replace("= 3", "= 0.5"))
    with Served(root) as srv:
        assert srv.get("bg", params={"job": "30"}).status_code == 200
        long_task = srv.wait_event(kind="task_start")
        write_function(root, "bg", BACKGROUND.replace("VERSION", "2"))
        serves(srv, "bg", "version", 2)
        ended = srv.wait_event(lambda e: e["task"] == long_task["task"], kind="task_end")
        assert ended["status"] == "cancelled"
        unload = srv.wait_event(lambda e: e["worker"] == long_task["worker"], kind="beforeunload")
        assert unload["reason"] == "termination"
        gone = srv.wait_event(lambda e: e["worker"] == long_task["worker"], kind="shutdown")
        assert gone["reason"] == "termination"


def test_a_burst_of_saves_is_one_or_two_reloads(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(0)}, config())
    with Served(root) as srv:
        assert srv.get("hello").json()["version"] == 0
        start = time.monotonic()
        for i in range(1, 51):  # 50 saves in one second, on a schedule so a hiccup does not spread them
            write_function(root, "hello", versioned(i))
            time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        serves(srv, "hello", "version", 50)
        # The reload's event comes once its new worker is ready, which may be after it served.
        wait_until(lambda: reloads(srv), what="the reload event")
        # Coalesced: far fewer reloads than saves. Unloaded it is one or two (bench/bench_reload.py); a
        # loaded machine can pause the saving or the watching longer than the quiet period the reloader
        # waits for (QUIET_S), and each such pause may end one reload and begin another.
        assert 1 <= len(reloads(srv)) <= 50 // 5, [e["message"] for e in reloads(srv)]


def test_same_size_edits_within_a_second_never_serve_stale_bytecode(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config())
    # Bytecode caching on (the test environment may switch it off): .pyc files are written next to the code.
    with Served(root, env={"PYTHONDONTWRITEBYTECODE": ""}) as srv:
        assert srv.get("hello").json()["version"] == 1
        for version in (2, 3, 4):  # same size, well within one second of each other
            write_function(root, "hello", versioned(version))
            serves(srv, "hello", "version", version)
        assert any((root / "supabase" / "functions" / "hello" / "__pycache__").glob("index.*.pyc"))


def test_symlinked_function_folders_are_watched(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config())
    elsewhere = tmp_path / "elsewhere" / "linked"
    elsewhere.mkdir(parents=True)
    (elsewhere / "index.py").write_text(versioned("a"))
    (root / "supabase" / "functions" / "linked").symlink_to(elsewhere, target_is_directory=True)
    with Served(root) as srv:
        assert srv.get("linked").json()["version"] == "a"
        (elsewhere / "index.py").write_text(versioned("b"))
        serves(srv, "linked", "version", "b")
        # A link made while serving: served, and its target watched from then on.
        later = tmp_path / "elsewhere" / "later"
        later.mkdir()
        (later / "index.py").write_text(versioned("x"))
        (root / "supabase" / "functions" / "later").symlink_to(later, target_is_directory=True)
        serves(srv, "later", "version", "x")
        (later / "index.py").write_text(versioned("y"))
        serves(srv, "later", "version", "y")


def test_no_reload_turns_watching_off(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config())
    with Served(root, "--no-reload") as srv:
        assert srv.get("hello").json()["version"] == 1
        write_function(root, "hello", versioned(2))
        write_function(root, "marker", versioned("m"))
        # Nothing reloads: after a moment that would be ample with reload on, still the old code and no
        # new function. Polling the requests themselves is the wait.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert srv.get("hello").json()["version"] == 1
            assert srv.get("marker").status_code == 404
        assert reloads(srv) == []


def test_a_functions_folder_deleted_and_restored_is_watched_again(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": versioned(1)}, config())
    functions = root / "supabase" / "functions"
    with Served(root) as srv:
        assert srv.get("hello").json()["version"] == 1
        shutil.rmtree(functions)  # e.g. a branch switch
        status_becomes(srv, "hello", 404)
        write_function(root, "hello", versioned(2))
        serves(srv, "hello", "version", 2)
        write_function(root, "hello", versioned(3))  # the new folder is watched, not just noticed
        serves(srv, "hello", "version", 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["per_worker", "oneshot"])
def test_fixing_a_module_stuck_at_import_serves_again(tmp_path: Path, policy: str) -> None:
    cfg = config(policy, "request_wait_timeout_ms = 1000\n")
    root = make_project(tmp_path, {"fn": "import time\ntime.sleep(3600)\n"}, cfg)
    with Served(root) as srv:
        assert srv.get("fn").status_code == 504  # its boot never ends: no worker becomes free
        write_function(root, "fn", versioned(2))
        # The stuck boot is stopped by the reload; it does not hold the pool until its wall clock ends.
        serves(srv, "fn", "version", 2)
        assert not srv.events(kind="boot_error")
