"""Real-process tests: streaming both ways, and how serve stops (no process is ever left behind)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from serving import Served, _alive, make_project, wait_until

STREAMS = """
import asyncio, hashlib, os
from starlette.responses import JSONResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.routing import Route

async def upload(req):
    digest, size = hashlib.sha256(), 0
    async for chunk in req.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})

async def events(req):
    # Each event is produced only once the client has received the one before (it creates the gate file
    # named after it): a response held back anywhere on the way cannot get past the first event.
    gate = req.query_params["gate"]
    async def gen():
        for i in range(5):
            yield f"data: {i}\\n\\n".encode()
            for _ in range(1000):  # 20 s at most
                if os.path.exists(f"{gate}.{i}"):
                    break
                await asyncio.sleep(0.02)
            else:
                yield b"data: held back\\n\\n"
                return
    return StreamingResponse(gen(), media_type="text/event-stream")

app = Starlette(routes=[Route("/streams/upload", upload, methods=["POST"]), Route("/streams/sse", events)])
"""

BACKGROUND = """
import asyncio
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def slow():
    await asyncio.sleep(float(__import__("os").environ.get("SLOW", "1")))
    print("slow task finished")

@EdgeRuntime.on("beforeunload")
async def bye(ev):
    print("beforeunload", ev.detail["reason"])

async def handler(req):
    EdgeRuntime.wait_until(slow())
    return PlainTextResponse("ok")
"""

CONFIG = '[edge_runtime]\npolicy = "per_worker"\ngraceful_exit_timeout_sec = 5\n'
SLOW = '\n[edge_runtime.secrets]\nSLOW = "30"\n'  # workers see secrets, never the host's whole env


@pytest.mark.timeout(60)
def test_twenty_megabyte_upload_streams_to_the_function(tmp_path: Path) -> None:
    body = os.urandom(20 * 1024 * 1024)
    with Served(make_project(tmp_path, {"streams": STREAMS}, CONFIG)) as srv:

        def chunks():  # a streamed (chunked) upload, not one buffer
            for i in range(0, len(body), 1 << 20):
                yield body[i : i + (1 << 20)]

        r = srv.post("streams", "/upload", content=chunks())
        assert r.status_code == 200
        assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@pytest.mark.timeout(60)
def test_server_sent_events_arrive_as_they_are_produced(tmp_path: Path) -> None:
    gate = tmp_path / "received"
    with Served(make_project(tmp_path, {"streams": STREAMS}, CONFIG)) as srv:
        received = []
        with srv.client.stream("GET", srv.url("streams", "/sse"), params={"gate": str(gate)}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    received.append(line)
                    Path(f"{gate}.{len(received) - 1}").touch()  # lets the function produce the next one
        # Each event came before the function produced the next one, which it did only on hearing that.
        assert received == [f"data: {i}" for i in range(5)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_drains_background_tasks_then_exits_zero(tmp_path: Path, sig: int) -> None:
    srv = Served(make_project(tmp_path, {"bg": BACKGROUND}, CONFIG)).start()
    try:
        assert srv.get("bg").text == "ok"
        srv.wait_event(kind="task_start")
    finally:
        code = srv.stop(sig)  # asserts no process is left
    assert code == 0
    assert srv.events(kind="log", message="slow task finished")
    assert srv.events(kind="task_end", status="completed")
    assert srv.events(kind="log", message="beforeunload termination")


@pytest.mark.timeout(60)
def test_sigterm_to_the_whole_process_group_still_drains(tmp_path: Path) -> None:
    # `timeout`, systemd and docker signal every process of the group, workers included.
    srv = Served(make_project(tmp_path, {"bg": BACKGROUND}, CONFIG), new_session=True).start()
    try:
        assert srv.get("bg").text == "ok"
        srv.wait_event(kind="task_start")
    finally:
        code = srv.stop(signal.SIGTERM, group=True)
    assert code == 0
    assert srv.events(kind="task_end", status="completed")
    assert srv.events(kind="shutdown", reason="termination")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "settings",
    [
        "graceful_exit_timeout_sec = 1\n",
        # The function's own timeout counts at shutdown, not the project's.
        "graceful_exit_timeout_sec = 30\n\n[functions.bg]\ngraceful_exit_timeout_sec = 1\n",
    ],
)
def test_tasks_past_the_graceful_timeout_are_cancelled_on_stop(tmp_path: Path, settings: str) -> None:
    cfg = CONFIG.replace("graceful_exit_timeout_sec = 5\n", settings) + SLOW
    srv = Served(make_project(tmp_path, {"bg": BACKGROUND}, cfg)).start()
    try:
        srv.get("bg")
        srv.wait_event(kind="task_start")
        started = time.monotonic()
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    # Well short of the 30 s the task runs and of the project's 30 s: a loaded machine may be slow to stop.
    assert time.monotonic() - started < 20
    end = srv.events(kind="task_end")[0]
    assert end["status"] == "cancelled" and end["reason"] == "termination"


@pytest.mark.timeout(60)
def test_a_second_ctrl_c_stops_waiting_for_background_tasks(tmp_path: Path) -> None:
    cfg = CONFIG.replace("= 5", "= 30") + SLOW
    srv = Served(make_project(tmp_path, {"bg": BACKGROUND}, cfg)).start()
    try:
        srv.get("bg")
        srv.wait_event(kind="task_start")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)
        wait_until(lambda: not _accepts(srv.port), what="serve to stop listening")
        started = time.monotonic()
    finally:
        code = srv.stop(signal.SIGINT)
    assert code == 0
    assert time.monotonic() - started < 20, "not the 30 s the task was allowed"
    assert srv.events(kind="task_end")[0]["status"] == "cancelled"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


SLEEPER = """
import asyncio
from starlette.responses import PlainTextResponse

async def handler(req):
    print("asleep")
    await asyncio.sleep(30)
    return PlainTextResponse("woke")
"""


@pytest.mark.timeout(60)
def test_a_request_cut_by_the_shutdown_deadline_says_so(tmp_path: Path) -> None:
    cfg = CONFIG.replace("= 5", "= 1")
    srv = Served(make_project(tmp_path, {"sleeper": SLEEPER}, cfg)).start()
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(srv.get("sleeper", timeout=30)))
    try:
        caller.start()
        srv.wait_event(kind="log", message="asleep")
    finally:
        assert srv.stop(signal.SIGTERM) == 0
        caller.join(30)
    (answer,) = answers
    assert answer.status_code == 500 and "shutdown" in answer.json()["message"], answer.text
    request_id = answer.headers["x-request-id"]
    (cut,) = srv.events(kind="log", request=request_id, cut_by="shutdown")
    assert "graceful_exit_timeout_sec (1 s)" in cut["message"]


@pytest.mark.timeout(60)
def test_sigkill_of_serve_leaves_no_worker_behind(tmp_path: Path) -> None:
    cfg = CONFIG + "max_parallelism = 3\n" + SLOW
    srv = Served(make_project(tmp_path, {"bg": BACKGROUND, "bg2": BACKGROUND}, cfg)).start()
    try:
        srv.get("bg")
        srv.get("bg2")
        wait_until(lambda: len(srv.worker_pids()) >= 2, what="two workers")
    finally:
        srv.stop(signal.SIGKILL)  # asserts every worker and the fork server are gone


@pytest.mark.timeout(60)
def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"bg": BACKGROUND}, CONFIG)) as srv:
        assert srv.get("bg").status_code == 200
        (pid,) = wait_until(srv.worker_pids, what="a worker")
        os.kill(pid, signal.SIGKILL)
        shutdown = srv.wait_event(kind="shutdown")
        assert shutdown["reason"] == "killed by SIGKILL"
        end = srv.wait_event(kind="task_end")
        assert end["status"] == "cancelled"  # a task_end follows its task_start even for a killed worker
        assert srv.get("bg").status_code == 200
        assert srv.worker_pids() and pid not in srv.worker_pids()


@pytest.mark.timeout(40)
def test_a_killed_fork_server_is_started_again_and_serving_goes_on(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"bg": BACKGROUND}, CONFIG)) as srv:
        assert srv.get("bg").status_code == 200
        (old_worker,) = wait_until(srv.worker_pids, what="a worker")
        assert srv.proc is not None
        (forkserver,) = [
            p
            for p in srv.family()
            if "edgecli.runtime.forkserver" in " ".join(p.cmdline()) and p.ppid() == srv.proc.pid
        ]
        forkserver.kill()  # its workers die with it (their parent-death signal)
        wait_until(lambda: not _alive([old_worker]), what="the worker to die with its fork server")
        # Requests fail while nothing can fork (a new server is not started within 2 s of the last
        # start, so one that cannot start is not restarted in a loop); then a new one takes over.
        wait_until(lambda: srv.get("bg").status_code == 200, timeout=15, what="serving to resume")
        warning = srv.wait_event(lambda e: "fork server" in e["message"], kind="log")
        assert "killed by SIGKILL" in warning["message"] and warning["level"] == "warning"
        new_workers = srv.worker_pids()  # children of the new fork server
        assert new_workers and old_worker not in new_workers


FORKING = """
import asyncio, os, time
from starlette.responses import PlainTextResponse

async def handler(req):
    pid = os.fork()  # the child inherits the worker's socket and holds it open
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    with open(os.environ["PIDFILE"], "w") as f:
        f.write(str(pid))
    await asyncio.sleep(30)
    return PlainTextResponse("woke")
"""


@pytest.mark.timeout(60)
def test_a_worker_whose_socket_a_child_holds_open_is_still_known_dead(tmp_path: Path) -> None:
    # The worker dies (with its fork server), a process it forked keeps its socket open: serve learns
    # the death from the process and answers the request in flight, instead of waiting for EOF.
    pidfile = tmp_path / "grandchild.pid"
    cfg = CONFIG + f'\n[edge_runtime.secrets]\nPIDFILE = "{pidfile}"\n'
    answers: list[httpx.Response] = []
    with Served(make_project(tmp_path, {"forking": FORKING}, cfg)) as srv:
        caller = threading.Thread(target=lambda: answers.append(srv.get("forking", timeout=30)))
        caller.start()
        wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="the grandchild")
        grandchild = psutil.Process(int(pidfile.read_text()))
        try:
            assert srv.proc is not None
            (forkserver,) = [
                p
                for p in srv.family()
                if "edgecli.runtime.forkserver" in " ".join(p.cmdline()) and p.ppid() == srv.proc.pid
            ]
            forkserver.kill()
            caller.join(20)
            assert answers and answers[0].status_code == 500, answers
            srv.wait_event(kind="shutdown", function="forking")
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                grandchild.kill()  # its worker's keeper has killed it already, if it was quick


@pytest.mark.timeout(30)
def test_httpx_is_what_the_helper_uses() -> None:
    # Guard for the helper itself: a connection to a closed port is refused, not hung.
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:9/", timeout=2)


@pytest.mark.timeout(60)
def test_a_function_hanging_at_import_delays_neither_start_nor_stop(tmp_path: Path) -> None:
    hang = "import time\ntime.sleep(3600)\n"
    cfg = CONFIG.replace("= 5", "= 30")
    srv = Served(make_project(tmp_path, {"hang": hang, "bg": BACKGROUND}, cfg)).start()
    try:
        assert srv.get("bg").text == "ok"  # the other function serves meanwhile
    finally:
        started = time.monotonic()
        assert srv.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 20  # not graceful_exit_timeout_sec (30 s): nothing could drain
    assert not srv.events(kind="boot_error")  # stopping a boot is not the function's failure
    assert "Traceback" not in srv.output()
