"""Real-process: faults inside functions are contained, each reported in one clear line, and serve is
healthy after — a segfault, a blocked loop, a worker ignoring SIGTERM, a module stuck at import, a
source that is not UTF-8, an entrypoint that is a directory."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest
from serving import Served, make_project, wait_until

HELLO = """
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse("hi")
"""

SEGFAULT = """
import ctypes

async def handler(req):
    ctypes.string_at(0)
"""

BLOCKS_THE_LOOP = """
import time
from starlette.responses import PlainTextResponse

async def handler(req):
    print("blocking")
    time.sleep(30)  # not asyncio.sleep: the worker's loop is stuck
    return PlainTextResponse("late")
"""

IGNORES_SIGTERM = """
import os, signal, time
from starlette.responses import PlainTextResponse

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)

async def handler(req):
    if req.query_params.get("block"):
        print("blocking")
        time.sleep(60)
    return PlainTextResponse(str(os.getpid()))
"""

STUCK_AT_IMPORT = """
import time
time.sleep(30)

async def handler(req):
    pass
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"
graceful_exit_timeout_sec = 1

[functions.slowboot]
boot_timeout_sec = 2

[functions.folder]
entrypoint = "./functions/folder"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(
        tmp_path,
        {
            "hello": HELLO,
            "segv": SEGFAULT,
            "blocked": BLOCKS_THE_LOOP,
            "stubborn": IGNORES_SIGTERM,
            "slowboot": STUCK_AT_IMPORT,
        },
        CONFIG,
    )
    functions = root / "supabase" / "functions"
    (functions / "latin").mkdir()
    (functions / "latin" / "index.py").write_bytes(
        b'GREETING = "caf\xe9"\n\nasync def handler(req):\n    pass\n'
    )
    (functions / "dir" / "index.py").mkdir(parents=True)  # an entrypoint that is a directory
    (functions / "folder").mkdir()
    return root


def in_background(srv: Served, name: str, **params: str) -> tuple[threading.Thread, list[httpx.Response]]:
    got: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(base_url=srv.base_url, timeout=60) as client:
            got.append(client.get(srv.url(name), params=params))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, got


@pytest.mark.timeout(60)
def test_a_segfault_is_a_500_and_one_line(project: Path) -> None:
    with Served(project) as srv:
        r = srv.get("segv")
        assert r.status_code == 500 and r.json()["code"] == "WORKER_ERROR"
        srv.wait_event(kind="shutdown", function="segv")
        (line,) = srv.events(kind="shutdown", function="segv")
        assert line["reason"] == "killed by SIGSEGV" and line["level"] == "error"
        assert srv.get("hello").text == "hi"
        assert srv.get("segv").status_code == 500  # a fresh worker, the same fault, still contained


@pytest.mark.timeout(90)
def test_a_blocked_loop_leaves_other_functions_alone(project: Path) -> None:
    with Served(project) as srv:
        thread, got = in_background(srv, "blocked")
        srv.wait_event(kind="log", function="blocked", message="blocking")
        wait_until(lambda: srv.get("hello").text == "hi", 10)
        for _ in range(20):
            assert srv.get("hello").text == "hi"
        assert thread.is_alive()  # the blocked request is still blocked meanwhile
        srv.stop(timeout=30)  # shutdown does not wait for the stuck loop beyond the drain
        thread.join(10)
        assert got and got[0].status_code >= 500


@pytest.mark.timeout(90)
def test_a_worker_ignoring_sigterm_still_goes_at_shutdown(project: Path) -> None:
    with Served(project) as srv:
        pid = int(srv.get("stubborn").text)
        thread, got = in_background(srv, "stubborn", block="1")
        srv.wait_event(kind="log", function="stubborn", message="blocking")
        srv.stop(signal.SIGTERM, timeout=30)
        thread.join(10)
        assert got and got[0].status_code >= 500
    assert pid not in {p.pid for p in srv.family()}


@pytest.mark.timeout(60)
def test_a_module_stuck_at_import_is_a_boot_timeout(project: Path) -> None:
    with Served(project) as srv:
        r = srv.get("slowboot")
        assert r.status_code == 503 and r.json()["code"] == "BOOT_ERROR"
        assert "did not finish booting within 2 s (boot_timeout_sec)" in r.json()["message"]
        assert srv.get("hello").text == "hi"
        assert srv.get("slowboot").status_code == 503  # until the file changes
        errors = srv.events(kind="boot_error", function="slowboot")
        assert len(errors) == 1


@pytest.mark.timeout(60)
def test_a_source_that_is_not_utf8_and_an_entrypoint_that_is_a_directory(project: Path) -> None:
    with Served(project) as srv:
        r = srv.get("latin")
        assert r.status_code == 503
        assert "latin/index.py is not valid UTF-8 (line 1" in r.json()["message"]
        for name, shown in (("dir", "functions/dir/index.py"), ("folder", "functions/folder")):
            assert srv.get(name).status_code == 404
            assert f"{shown} is a directory; point entrypoint at a file" in srv.output()
        assert srv.get("hello").text == "hi"
