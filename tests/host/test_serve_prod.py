"""Real-process tests of `edgecli serve --prod`: the container contract (JSON lines on stdout, health,
$PORT on every interface, SIGTERM drains and exits 0) and nothing left behind."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from serving import Served, free_port, make_project, wait_until

RECORD_KEYS = {"ts", "kind", "function", "worker", "request", "task", "level", "message"}

HELLO = """
from starlette.responses import JSONResponse

async def handler(req):
    return JSONResponse({"message": "hello"})
"""

# Its import waits until the test creates a file beside it: health is 503 for as long as the test wants.
GATED = """
import pathlib, time
from starlette.responses import PlainTextResponse

gate = pathlib.Path(__file__).with_name("open")
deadline = time.monotonic() + 30
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.02)

async def handler(req):
    return PlainTextResponse("gated")
"""

BROKEN = """
raise RuntimeError("cannot boot")
"""

BACKGROUND = """
import asyncio, pathlib
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def work():
    await asyncio.sleep(1.5)
    print("task finished")

async def handler(req):
    if req.url.path.endswith("/slow"):
        print("slow request started")
        await asyncio.sleep(1.5)
        return PlainTextResponse("slow done")
    EdgeRuntime.wait_until(work())
    return PlainTextResponse("accepted")
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"
max_parallelism = 2
graceful_exit_timeout_sec = 10
"""


def health(srv: Served) -> httpx.Response:
    return srv.client.get("/_internal/health")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def stdout_records(srv: Served) -> list[dict[str, object]]:
    """Every line serve wrote on stdout, each of which must be one JSON record of the event format."""
    records = []
    for line in srv.output().splitlines():
        record = json.loads(line)  # a line that is not JSON fails the test here
        assert record.keys() >= RECORD_KEYS, line
        records.append(record)
    return records


@pytest.mark.timeout(90)
def test_prod_prints_json_lines_only_and_health_turns_ready_once_every_function_booted(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, {"hello": HELLO, "gated": GATED}, CONFIG)
    srv = Served(project, "--prod", json_output=False, separate_stderr=True).start()
    try:
        r = health(srv)
        assert r.status_code == 503
        failing = r.json()["failing"]
        assert failing["gated"] == "booting" and set(failing) <= {"gated", "hello"}
        (project / "supabase" / "functions" / "gated" / "open").touch()
        wait_until(lambda: health(srv).status_code == 200, 30, what="health to turn 200")
        assert health(srv).json() == {"status": "ok", "functions": ["gated", "hello"]}
        assert srv.get("hello").json() == {"message": "hello"}
        # max_parallelism workers per function were booted at start, before any request came.
        srv.wait_event(kind="request", status=200)
        # Health needs one booted worker per function; the second of hello's two may come a little later.
        wait_until(lambda: len(srv.events(kind="boot", function="hello")) == 2, 20, what="hello's 2 boots")
        records = stdout_records(srv)
        assert len([r for r in records if r["kind"] == "boot" and r["function"] == "hello"]) == 2
        assert not any(r["kind"] == "request" and r["path"] == "/_internal/health" for r in records)
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    stdout_records(srv)  # the shutdown's records too
    assert srv.err_path is not None
    assert "Traceback" not in srv.err_path.read_text()
    assert not (project / "supabase" / ".temp" / "edgecli" / "events.db").exists()  # no store without --store


@pytest.mark.timeout(60)
def test_prod_says_what_uvicorn_says_as_a_json_record_on_stdout(tmp_path: Path) -> None:
    """An invalid request is uvicorn's to report: a record on stdout like every other, not a plain
    `WARNING:` line on stderr that a container's log pipeline would take apart."""
    project = make_project(tmp_path, {"hello": HELLO}, CONFIG)
    srv = Served(project, "--prod", json_output=False, separate_stderr=True).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")

        def warned() -> list[dict[str, object]]:
            return [r for r in stdout_records(srv) if r.get("logger") == "uvicorn.error"]

        wait_until(warned, 10, what="uvicorn's warning on stdout")
        assert (
            warned()[0]["level"] == "warning" and warned()[0]["message"] == "Invalid HTTP request received."
        )
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    assert srv.err_path is not None
    assert "Invalid HTTP request" not in srv.err_path.read_text()


@pytest.mark.timeout(60)
def test_prod_health_names_a_function_that_cannot_boot(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO, "broken": BROKEN}, CONFIG)
    with Served(project, "--prod", json_output=False) as srv:
        srv.wait_event(kind="boot_error", function="broken")
        wait_until(lambda: health(srv).json().get("failing") == {"broken": "boot_error"}, 10, what="health")
        r = health(srv)
        assert r.status_code == 503
        assert "cannot boot" not in r.text  # the traceback is in the log, not on the open port
        assert srv.get("hello").status_code == 200
        assert srv.get("broken").json()["code"] == "BOOT_ERROR"


@pytest.mark.timeout(60)
def test_prod_listens_on_every_interface_at_port_from_the_environment(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO}, CONFIG)
    srv = start_on_platform_port(project)  # $PORT wins over serve's --port 0, as the platform sets it
    try:
        wait_until(lambda: health(srv).status_code == 200, 20, what="health to turn 200")
        assert srv.proc is not None
        listening = [
            c.laddr
            for c in psutil.Process(srv.proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(a.ip, a.port) for a in listening] == [("0.0.0.0", int(srv.env["PORT"]))]
        assert srv.get("hello").status_code == 200
    finally:
        srv.stop()
    assert (project / "supabase" / ".temp" / "edgecli" / "events.db").is_file()  # --store asked for one


@pytest.mark.timeout(90)
def test_sigterm_lets_in_flight_requests_and_background_tasks_finish_then_exits_0(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"background": BACKGROUND}, CONFIG)
    srv = Served(project, "--prod", json_output=False).start()
    wait_until(lambda: health(srv).status_code == 200, 20, what="health to turn 200")
    assert srv.post("background").text == "accepted"
    srv.wait_event(kind="task_start")
    slow: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: slow.update(r=srv.get("background", "/slow")))
    thread.start()
    srv.wait_event(lambda e: e["message"] == "slow request started")
    started = time.monotonic()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(srv.port), 20, what="serve to stop accepting connections")
    code = srv.stop(signal.SIGTERM, timeout=30)  # waits for the exit (a second SIGTERM changes nothing)
    thread.join(10)
    assert code == 0
    assert slow["r"].status_code == 200 and slow["r"].text == "slow done"
    ends = srv.events(kind="task_end")
    assert [e["status"] for e in ends] == ["completed"], srv.output()[-3000:]
    assert srv.events(message="task finished")
    # Within graceful_exit_timeout_sec (10 s), with room for a loaded machine to exit.
    assert time.monotonic() - started < 10 + 15


def start_on_platform_port(project: Path, attempts: int = 3) -> Served:
    """`serve --prod --store` listening on $PORT. A port is free only until someone takes it: another
    process may bind it first, and then serve says so and exits; a fresh port is tried then."""
    for _ in range(attempts):
        srv = Served(project, "--prod", "--store", json_output=False, env={"PORT": str(free_port())})
        try:
            return srv.start()
        except AssertionError:
            if "cannot listen on" not in srv.output():
                raise
            srv.stop()
    raise AssertionError(f"no free port for $PORT after {attempts} tries")
