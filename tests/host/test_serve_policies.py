"""Real-process tests: `edgecli serve` under each policy, background tasks, lifecycle events."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

BACKGROUND = """
import asyncio, os
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime, serve

async def work(seconds):
    try:
        await asyncio.sleep(seconds)
        print("work done")
    except asyncio.CancelledError:
        print("work cancelled")
        raise

@EdgeRuntime.on("beforeunload")
def unload(ev):
    print("unload", ev.detail["reason"])

async def handler(req):
    print("handling")
    EdgeRuntime.wait_until(work(float(req.query_params.get("sleep", "0.3"))))
    return JSONResponse({"pid": os.getpid()})

serve(handler)
"""

SLEEPY = """
import asyncio, os
from starlette.responses import JSONResponse

async def handler(req):
    await asyncio.sleep(0.5)
    return JSONResponse({"pid": os.getpid()})
"""

SYNC = """
import os, threading, time
from starlette.responses import PlainTextResponse
from edgecli import serve

def handler(req):
    time.sleep(0.05)
    print("sync handler ran")
    return PlainTextResponse(f"{os.getpid()} {threading.current_thread() is threading.main_thread()}")

serve(handler)
"""


def config(policy: str, extra: str = "") -> str:
    return f'[edge_runtime]\npolicy = "{policy}"\ngraceful_exit_timeout_sec = 5\n{extra}'


@pytest.mark.timeout(40)
def test_per_worker_runs_background_tasks_to_completion_on_one_warm_worker(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"bg": BACKGROUND}, config("per_worker"))) as srv:
        first = srv.get("bg")
        second = srv.get("bg")
        assert first.status_code == 200 and second.status_code == 200
        assert first.json()["pid"] == second.json()["pid"]  # sequential requests reuse the warm worker
        request_id = first.headers["x-request-id"]
        end = srv.wait_event(kind="task_end", request=request_id)
        assert end["status"] == "completed" and end["name"] == "work"
        start = srv.events(kind="task_start", task=end["task"])[0]
        assert start["request"] == request_id
        # What the task printed names the task and the request it came from.
        done = srv.wait_event(kind="log", message="work done", task=end["task"])
        assert done["request"] == request_id and done["function"] == "bg"
        handling = srv.events(kind="log", message="handling", request=request_id)
        assert handling and handling[0]["task"] is None
        summary = srv.wait_event(kind="request", request=request_id)
        assert summary["status"] == 200 and summary["method"] == "GET"


@pytest.mark.timeout(40)
def test_oneshot_gives_each_request_a_fresh_worker_and_cuts_off_its_tasks(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"bg": BACKGROUND}, config("oneshot"))) as srv:
        pids = {srv.get("bg", params={"sleep": "5"}).json()["pid"] for _ in range(3)}
        assert len(pids) == 3
        end = srv.wait_event(kind="task_end", status="cancelled")
        assert end["reason"] == "termination"
        # The function saw beforeunload(termination), and its task's except/finally ran.
        srv.wait_event(kind="log", message="unload termination")
        srv.wait_event(kind="log", message="work cancelled")
        warning = srv.wait_event(lambda e: "cut off" in e["message"], kind="log")
        assert "per_worker" in warning["message"] and "bg" in warning["message"]
        srv.wait_event(kind="shutdown", reason="termination")


@pytest.mark.timeout(40)
def test_per_request_lets_background_tasks_finish(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"bg": BACKGROUND}, config("per_request"))) as srv:
        response = srv.get("bg", params={"sleep": "0.5"})
        assert response.status_code == 200
        end = srv.wait_event(kind="task_end", request=response.headers["x-request-id"])
        assert end["status"] == "completed"


@pytest.mark.timeout(40)
def test_policy_flag_overrides_config(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"bg": BACKGROUND}, config("per_worker"))
    with Served(project, "--policy", "oneshot") as srv:
        pids = {srv.get("bg").json()["pid"] for _ in range(2)}
        assert len(pids) == 2


@pytest.mark.timeout(40)
def test_per_worker_serves_concurrent_requests_on_one_worker(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"sleepy": SLEEPY}, config("per_worker"))) as srv:
        srv.get("sleepy")  # warm
        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda _: srv.get("sleepy"), range(20)))
        elapsed = time.monotonic() - started
        assert all(r.status_code == 200 for r in responses)
        assert len({r.json()["pid"] for r in responses}) == 1
        # Loose bound on purpose (shared CI machine): sequential would take 10 s.
        assert elapsed < 3.0, elapsed


@pytest.mark.timeout(40)
def test_oneshot_serves_concurrent_requests_with_concurrent_instances(tmp_path: Path) -> None:
    cfg = config("oneshot", "max_parallelism = 4")
    with Served(make_project(tmp_path, {"sleepy": SLEEPY}, cfg)) as srv:
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: srv.get("sleepy"), range(4)))
        assert all(r.status_code == 200 for r in responses)
        assert len({r.json()["pid"] for r in responses}) == 4
        assert time.monotonic() - started < 1.9  # four at once, not one after another


@pytest.mark.timeout(40)
def test_sync_handler_runs_in_a_thread(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"sync": SYNC}, config("per_worker"))) as srv:
        response = srv.get("sync")
        assert response.status_code == 200
        assert response.text.endswith("False")  # not on the event loop's thread
        line = srv.wait_event(kind="log", message="sync handler ran")
        assert line["request"] == response.headers["x-request-id"]


@pytest.mark.timeout(40)
def test_request_waiting_past_request_wait_timeout_gets_504(tmp_path: Path) -> None:
    cfg = config("per_request", "max_parallelism = 1\nrequest_wait_timeout_ms = 200")
    with Served(make_project(tmp_path, {"sleepy": SLEEPY}, cfg)) as srv:
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda _: srv.get("sleepy"), range(2)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 504]
        timeout = next(r for r in responses if r.status_code == 504)
        assert timeout.json()["code"] == "WORKER_TIMEOUT"


@pytest.mark.timeout(40)
def test_per_request_retired_worker_is_replaced_without_failing_requests(tmp_path: Path) -> None:
    unhandled = """
import asyncio, os
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime

async def boom():
    raise RuntimeError("task blew up")

async def handler(req):
    if req.query_params.get("boom"):
        EdgeRuntime.wait_until(boom())
        await asyncio.sleep(0.1)
    return JSONResponse({"pid": os.getpid()})
"""
    with Served(make_project(tmp_path, {"u": unhandled}, config("per_worker"))) as srv:
        first = srv.get("u", params={"boom": "1"})
        assert first.status_code == 200
        srv.wait_event(lambda e: "Unhandled exception in background task boom" in e["message"], level="error")
        # The worker is retired: the next request is served (not failed) by a fresh worker.
        wait_until(lambda: srv.get("u").json()["pid"] != first.json()["pid"], 10, what="a fresh worker")
        srv.wait_event(kind="shutdown", reason="early_drop")


BLOCKS_AFTER = """
import asyncio, time
from starlette.responses import PlainTextResponse
from edgecli import serve

later = set()

def block():
    time.sleep(4)  # holds the worker's loop: nothing else in this worker runs meanwhile

async def handler(req):
    later.add(asyncio.get_running_loop().call_soon(block))  # runs right after the handler's step
    return PlainTextResponse("sent first")

serve(handler)
"""


@pytest.mark.timeout(40)
def test_a_response_is_not_held_back_by_a_task_that_blocks_the_loop_after_it(tmp_path: Path) -> None:
    # The worker batches the frames of one loop pass into one write; a request alone in flight must
    # still leave at once, not after the background task that was scheduled before the write.
    with Served(make_project(tmp_path, {"blocks": BLOCKS_AFTER}, config("per_worker"))) as srv:
        started = time.monotonic()
        response = srv.get("blocks")
        assert response.text == "sent first"
        assert time.monotonic() - started < 3.0  # the loop is blocked for 4 s
