"""Real-process tests: `edgecli serve` under each policy, background tasks, lifecycle events."""

from __future__ import annotations

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

MEET = """
import asyncio, os, uuid
from starlette.responses import JSONResponse

async def handler(req):
    # ?meet=DIR&n=N: each request leaves a file in DIR, then waits (20 s at most) until N are there. They
    # meet only if N requests run at the same time, however slowly each one starts.
    together = None
    if "meet" in req.query_params:
        meet, n = req.query_params["meet"], int(req.query_params["n"])
        open(os.path.join(meet, uuid.uuid4().hex), "w").close()
        for _ in range(1000):
            if len(os.listdir(meet)) >= n:
                together = True
                break
            await asyncio.sleep(0.02)
        else:
            together = False
    return JSONResponse({"pid": os.getpid(), "together": together})
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
    meet = tmp_path / "meet"
    meet.mkdir()
    with Served(make_project(tmp_path, {"meet": MEET}, config("per_worker"))) as srv:
        srv.get("meet")  # warm
        params = {"meet": str(meet), "n": "20"}
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda _: srv.get("meet", params=params), range(20)))
        assert all(r.status_code == 200 for r in responses)
        assert [r.json()["together"] for r in responses] == [True] * 20  # all 20 in flight at once
        assert len({r.json()["pid"] for r in responses}) == 1


@pytest.mark.timeout(40)
def test_oneshot_serves_concurrent_requests_with_concurrent_instances(tmp_path: Path) -> None:
    meet = tmp_path / "meet"
    meet.mkdir()
    cfg = config("oneshot", "max_parallelism = 4")
    with Served(make_project(tmp_path, {"meet": MEET}, cfg)) as srv:
        params = {"meet": str(meet), "n": "4"}
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: srv.get("meet", params=params), range(4)))
        assert all(r.status_code == 200 for r in responses)
        assert [r.json()["together"] for r in responses] == [True] * 4  # four at once, not one by one
        assert len({r.json()["pid"] for r in responses}) == 4


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
    meet = tmp_path / "meet"
    meet.mkdir()
    with Served(make_project(tmp_path, {"meet": MEET}, cfg)) as srv:
        with ThreadPoolExecutor(1) as pool:
            # The one worker is held by a request that waits for a second one to meet it...
            held = pool.submit(srv.get, "meet", params={"meet": str(meet), "n": "2"})
            wait_until(lambda: any(meet.iterdir()), 20, what="the first request to reach the function")
            # ...which waits for the worker past request_wait_timeout_ms.
            timeout = srv.get("meet")
            (meet / "released").touch()  # the second to meet: the first request ends
            assert held.result().status_code == 200
        assert timeout.status_code == 504 and timeout.json()["code"] == "WORKER_TIMEOUT"


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
import asyncio, os, time
from starlette.responses import PlainTextResponse
from edgecli import serve

later = set()

def block(gate):
    # Holds the worker's loop (nothing else in this worker runs meanwhile) until the client, having got
    # the response, opens the gate; 20 s at most, and then it says so.
    for _ in range(1000):
        if os.path.exists(gate):
            return
        time.sleep(0.02)
    open(gate + ".missed", "w").close()

async def handler(req):
    gate = req.query_params["gate"]
    later.add(asyncio.get_running_loop().call_soon(block, gate))  # runs right after the handler's step
    return PlainTextResponse("sent first")

serve(handler)
"""


@pytest.mark.timeout(40)
def test_a_response_is_not_held_back_by_a_task_that_blocks_the_loop_after_it(tmp_path: Path) -> None:
    # The worker batches the frames of one loop pass into one write; a request alone in flight must
    # still leave at once, not after the background task that was scheduled before the write.
    gate = tmp_path / "gate"
    with Served(make_project(tmp_path, {"blocks": BLOCKS_AFTER}, config("per_worker"))) as srv:
        response = srv.get("blocks", params={"gate": str(gate)})
        missed = tmp_path / "gate.missed"
        assert not missed.exists()  # the response came while the loop was still blocked
        gate.touch()
        assert response.text == "sent first"
