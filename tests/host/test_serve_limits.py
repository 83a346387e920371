"""Real-process tests: CPU, memory and wall-clock limits (docs/architecture.md, "Limits"), with small
limits to stay fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

LIMITED = """
import asyncio, os, subprocess, sys, time
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime

@EdgeRuntime.on("beforeunload")
def unload(ev):
    print("unload", ev.detail["reason"])

async def long_task():
    await asyncio.sleep(30)

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

async def handler(req):
    what = req.query_params.get("do", "")
    seconds = float(req.query_params.get("s", "10"))
    if what == "spin":  # in a thread: the event loop (and so beforeunload) keeps running
        await asyncio.to_thread(spin, seconds)
    elif what == "spin_loop":  # blocks the event loop itself
        spin(seconds)
    elif what == "hog":  # 50 MB/s: 90 % to 100 % of the limit takes 4 of serve's samples, on any machine
        blocks = []
        for _ in range(400):
            blocks.append(b"x" * (1 << 20))
            await asyncio.sleep(0.02)
    elif what == "task":
        EdgeRuntime.wait_until(long_task())
    elif what == "sleep":
        await asyncio.sleep(seconds)
    elif what == "child":  # the CPU and memory of a process the function starts are the function's
        code = "import sys\\nb = bytearray(int(sys.argv[1]) << 20)\\nwhile True: pass"
        argv = [sys.executable, "-c", code, req.query_params.get("mb", "0")]
        if req.query_params.get("orphan"):  # a daemon: its own session, its parent gone at once
            starter = "import subprocess, sys\\nsubprocess.Popen(sys.argv[1:], start_new_session=True)"
            subprocess.run([sys.executable, "-c", starter, *argv])
        else:
            subprocess.Popen(argv)
        await asyncio.sleep(seconds)
    return JSONResponse({"pid": os.getpid()})
"""


def project(tmp_path: Path, limits: str, functions: str = "", grace: int = 1) -> Path:
    config = (
        f'[edge_runtime]\npolicy = "per_worker"\ngraceful_exit_timeout_sec = {grace}\n{limits}\n{functions}'
    )
    return make_project(tmp_path, {"lim": LIMITED, "other": LIMITED}, config)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["spin", "spin_loop"])
def test_cpu_hard_limit_kills_with_546_and_a_fresh_worker_serves_next(tmp_path: Path, what: str) -> None:
    with Served(project(tmp_path, "cpu_time_soft_limit_ms = 300\ncpu_time_hard_limit_ms = 600")) as srv:
        pid = srv.get("lim").json()["pid"]
        r = srv.get("lim", params={"do": what})
        assert r.status_code == 546, r.text
        assert r.json()["code"] == "WORKER_LIMIT"
        down = srv.wait_event(kind="shutdown", function="lim", reason="cpu")
        # Killed at about the hard limit, counted in CPU time: a loaded machine stretches the wall clock
        # such a kill takes, not the CPU the worker got to use (how fast it is, is bench/'s business).
        assert 500 <= down["cpu_ms"] < 2 * 600, down
        line = srv.wait_event(lambda e: "cpu limit reached" in e["message"], kind="log")
        assert line["level"] == "error" and "ms CPU" in line["message"]
        if what == "spin":  # the loop was free: the function heard why it is going away
            srv.wait_event(kind="beforeunload", reason="cpu")
            srv.wait_event(kind="log", message="unload cpu")
        fresh = srv.get("lim")
        assert fresh.status_code == 200 and fresh.json()["pid"] != pid


@pytest.mark.timeout(60)
def test_cpu_soft_limit_retires_the_worker_without_failing_requests(tmp_path: Path) -> None:
    with Served(project(tmp_path, "cpu_time_soft_limit_ms = 150\ncpu_time_hard_limit_ms = 5000")) as srv:
        first = srv.get("lim", params={"do": "spin", "s": "0.3"})
        assert first.status_code == 200
        srv.wait_event(kind="shutdown", function="lim", reason="early_drop")
        srv.wait_event(kind="beforeunload", reason="early_drop")
        srv.wait_event(kind="log", message="unload early_drop")
        second = srv.get("lim")
        assert second.status_code == 200 and second.json()["pid"] != first.json()["pid"]


@pytest.mark.timeout(60)
def test_memory_limit_kills_a_hog_with_546(tmp_path: Path) -> None:
    with Served(project(tmp_path, "memory_limit_mb = 100")) as srv:
        r = srv.get("lim", params={"do": "hog"})
        assert r.status_code == 546 and "memory" in r.json()["message"]
        down = srv.wait_event(kind="shutdown", function="lim", reason="memory")
        assert down["memory_mb"] >= 90
        srv.wait_event(kind="beforeunload", reason="memory")
        assert srv.get("lim").status_code == 200


@pytest.mark.timeout(60)
def test_wall_clock_retires_at_half_warns_at_ninety_percent_and_kills_at_the_limit(tmp_path: Path) -> None:
    with Served(project(tmp_path, "wall_clock_limit_sec = 2", grace=10)) as srv:
        first = srv.get("lim", params={"do": "task"})
        assert first.status_code == 200
        # Past 50 %: retired, so a new request goes to a fresh worker while the old one keeps its task.
        pid = first.json()["pid"]
        second = wait_until(lambda: (r := srv.get("lim")).json()["pid"] != pid and r, 20, what="a new worker")
        assert second.status_code == 200
        # Deadlines well short of the 30 s the task would otherwise run.
        srv.wait_event(kind="log", message="unload wall_clock", timeout=20)
        end = srv.wait_event(kind="task_end", request=first.headers["x-request-id"], timeout=20)
        assert end["status"] == "cancelled" and end["reason"] == "wall_clock"
        srv.wait_event(kind="shutdown", reason="wall_clock")


@pytest.mark.timeout(60)
def test_per_function_override_and_disabled_limit(tmp_path: Path) -> None:
    functions = "[functions.other]\ncpu_time_soft_limit_ms = 0\ncpu_time_hard_limit_ms = 0\n"
    limits = "cpu_time_soft_limit_ms = 200\ncpu_time_hard_limit_ms = 400"
    with Served(project(tmp_path, limits, functions)) as srv:
        assert srv.get("other", params={"do": "spin", "s": "0.8"}).status_code == 200  # limit off for `other`
        assert srv.get("lim", params={"do": "spin", "s": "0.8"}).status_code == 546


@pytest.mark.timeout(60)
def test_a_retiring_worker_lets_its_request_run_to_its_own_end(tmp_path: Path) -> None:
    # Retired at half the wall clock (8 s) while a 9 s request is in flight, with no grace at all: the
    # request still finishes (it ends before the 16 s limit), then the worker drains and leaves.
    with Served(project(tmp_path, "wall_clock_limit_sec = 16", grace=0)) as srv:
        pid = srv.get("lim").json()["pid"]
        slow = srv.get("lim", params={"do": "sleep", "s": "9"}, timeout=30)
        assert slow.status_code == 200, slow.text
        assert slow.json()["pid"] == pid
        retired = srv.wait_event(lambda e: "worker retired (wall_clock)" in e["message"], kind="log")
        down = srv.wait_event(kind="shutdown", function="lim", worker=retired["worker"])
        assert down["reason"] == "early_drop"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("limits", "params", "reason"),
    [
        ("cpu_time_soft_limit_ms = 300\ncpu_time_hard_limit_ms = 600", {}, "cpu"),
        ("memory_limit_mb = 150", {"mb": "200"}, "memory"),
        ("memory_limit_mb = 150", {"mb": "200", "orphan": "1"}, "memory"),
        ("cpu_time_soft_limit_ms = 300\ncpu_time_hard_limit_ms = 600", {"orphan": "1"}, "cpu"),
    ],
)
def test_limits_count_the_processes_a_function_starts(
    tmp_path: Path, limits: str, params: dict[str, str], reason: str
) -> None:
    with Served(project(tmp_path, limits)) as srv:
        r = srv.get("lim", params={"do": "child", "s": "20", **params}, timeout=30)
        assert r.status_code == 546, r.text
        srv.wait_event(kind="shutdown", function="lim", reason=reason)
        line = srv.wait_event(lambda e: f"{reason} limit reached" in e["message"], kind="log")
        assert " -" not in line["message"], "no negative figure"
        assert srv.get("lim").status_code == 200
    # Leaving the block asserts that no process is left: the child went with its worker.
