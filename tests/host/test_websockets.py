"""Real-process tests: WebSockets through relay → worker → app, with real clients (`websockets`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import websockets.sync.client
from serving import Served, make_project, replace_function, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edgecli.config import DEFAULT_JWT_SECRET
from edgecli.host.auth import make_key

ECHO = """
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from edgecli import EdgeRuntime

VERSION = "one"

@EdgeRuntime.on("beforeunload")
def unload(ev):
    print("beforeunload", ev.detail["reason"])

async def pid(request):
    return PlainTextResponse(f"{os.getpid()} {VERSION}")

async def echo(ws):
    await ws.accept()
    async for text in ws.iter_text():
        print("got", text)
        await ws.send_text(f"{VERSION} {os.getpid()} {text}")

async def boom():
    raise RuntimeError("boom")

async def codes(ws):
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            print("closed", message["code"])
            return
        if message["text"] == "reject":  # an unhandled rejection: the worker asks to retire
            EdgeRuntime.waitUntil(boom())
        await ws.send_text(f"{VERSION} {os.getpid()} {message['text']}")

app = Starlette(
    routes=[Route("/echo/pid", pid), WebSocketRoute("/echo/ws", echo), WebSocketRoute("/echo/codes", codes)]
)
"""

PLAIN = """
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse("plain")
"""

CONFIG = """
[edge_runtime]
policy = "{policy}"
graceful_exit_timeout_sec = {grace}
"""


def project(tmp_path: Path, policy: str = "per_worker", grace: float = 15, extra: str = "") -> Path:
    config = CONFIG.format(policy=policy, grace=grace) + extra
    return make_project(tmp_path, {"echo": ECHO, "plain": PLAIN}, config)


def ws_url(srv: Served, name: str, path: str = "") -> str:
    return f"ws://127.0.0.1:{srv.port}/functions/v1/{name}{path}"


@pytest.mark.timeout(60)
def test_echo_records_one_request_per_socket_and_tags_its_logs(tmp_path: Path) -> None:
    with Served(project(tmp_path)) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws")) as ws:
            ws.send("a")
            assert ws.recv(timeout=10).endswith(" a")
            ws.send("b")
            assert ws.recv(timeout=10).endswith(" b")
        record = srv.wait_event(kind="request", method="WEBSOCKET")
        assert record["status"] == 101 and record["path"] == "/functions/v1/echo/ws"
        assert record["duration_ms"] > 0
        logs = [e["message"] for e in srv.events(kind="log", request=record["request"])]
        assert logs == ["got a", "got b"]
        assert len(srv.events(kind="request", method="WEBSOCKET")) == 1


@pytest.mark.timeout(60)
def test_verify_jwt_applies_to_the_upgrade(tmp_path: Path) -> None:
    with Served(project(tmp_path), verify_jwt=True) as srv:
        with pytest.raises(InvalidStatus) as refused:  # a browser's handshake: no Authorization header
            websockets.sync.client.connect(ws_url(srv, "echo", "/ws"))
        assert refused.value.response.status_code == 401
        assert b"Missing authorization header" in refused.value.response.body
        headers = {"Authorization": f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}"}
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws"), additional_headers=headers) as ws:
            ws.send("x")
            assert ws.recv(timeout=10).endswith(" x")


@pytest.mark.timeout(60)
def test_a_plain_handler_and_an_unknown_function_refuse_the_upgrade(tmp_path: Path) -> None:
    with Served(project(tmp_path)) as srv:
        for name, status in (("plain", 403), ("nope", 404)):
            with pytest.raises(InvalidStatus) as refused:
                websockets.sync.client.connect(ws_url(srv, name))
            assert refused.value.response.status_code == status, name
        assert srv.get("plain").text == "plain"  # and the function still serves HTTP


@pytest.mark.timeout(60)
def test_oneshot_instance_lives_exactly_as_long_as_its_socket(tmp_path: Path) -> None:
    with Served(project(tmp_path, "oneshot")) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws")) as ws:
            ws.send("1")
            pid = int(ws.recv(timeout=10).split()[1])
            ws.send("2")
            assert int(ws.recv(timeout=10).split()[1]) == pid  # the same instance while it is open
            assert pid in srv.worker_pids()
        wait_until(lambda: pid not in srv.worker_pids(), 10, what="the instance to end with its socket")


@pytest.mark.timeout(90)
def test_reload_leaves_an_open_socket_on_the_old_worker(tmp_path: Path) -> None:
    root = project(tmp_path)
    with Served(root) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws")) as ws:
            ws.send("before")
            old = ws.recv(timeout=10).split()
            replace_function(root, "echo", ECHO.replace('VERSION = "one"', 'VERSION = "two"'))
            wait_until(lambda: srv.get("echo", "/pid").text.endswith("two"), 20, what="the new code")
            ws.send("after")
            assert ws.recv(timeout=10).split() == ["one", old[1], "after"]  # still the old worker
            assert int(old[1]) in srv.worker_pids()
        wait_until(lambda: int(old[1]) not in srv.worker_pids(), 20, what="the old worker to leave")


@pytest.mark.timeout(60)
def test_a_limit_closes_the_socket_with_1011_after_beforeunload(tmp_path: Path) -> None:
    # The socket stays open past the worker's wall clock: retired at half of it (an open socket keeps
    # it), beforeunload at 90 %, killed at the limit.
    limits = "\n[functions.echo]\nwall_clock_limit_sec = 4\n"
    with Served(project(tmp_path, extra=limits)) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws")) as ws:
            ws.send("hello")
            ws.recv(timeout=10)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        record = srv.wait_event(kind="request", method="WEBSOCKET")
        assert record["status"] == 101
        srv.wait_event(kind="shutdown", reason="wall_clock")
        assert srv.events(kind="log", message="beforeunload wall_clock")  # heard before the kill


@pytest.mark.timeout(60)
def test_stopping_serve_waits_for_an_open_socket_then_closes_it_with_1012(tmp_path: Path) -> None:
    srv = Served(project(tmp_path, grace=2)).start()
    try:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/codes")) as ws:
            ws.send("x")
            ws.recv(timeout=10)
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGINT)
            ws.send("still open")  # in-flight work: it runs on within graceful_exit_timeout_sec
            assert ws.recv(timeout=10).endswith(" still open")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        # 1012 "service restart", the code bare uvicorn closes its sockets with when it stops.
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value.rcvd
    finally:
        assert srv.stop(timeout=30) == 0
    assert srv.events(kind="log", message="closed 1012"), "the app hears the code its client got"


@pytest.mark.timeout(60)
def test_a_socket_closed_while_serve_drains_lets_it_exit_without_waiting_out_the_grace(
    tmp_path: Path,
) -> None:
    srv = Served(project(tmp_path, grace=40)).start()
    try:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/ws")) as ws:
            ws.send("x")
            ws.recv(timeout=10)
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGINT)
            ws.send("y")
            assert ws.recv(timeout=10).endswith(" y")
        assert srv.proc.wait(20) == 0, "serve still waits for a socket that has closed"
    finally:
        assert srv.stop(timeout=30) == 0


@pytest.mark.timeout(90)
def test_reload_closes_a_socket_left_open_past_the_graceful_timeout_with_1012(tmp_path: Path) -> None:
    root = project(tmp_path, grace=2)
    with Served(root) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/codes")) as ws:
            ws.send("before")
            old = ws.recv(timeout=10).split()
            replace_function(root, "echo", ECHO.replace('VERSION = "one"', 'VERSION = "two"'))
            wait_until(lambda: srv.get("echo", "/pid").text.endswith("two"), 20, what="the new code")
            ws.send("after")
            assert ws.recv(timeout=10).split()[:2] == old[:2], "the old worker keeps its socket a while"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value.rcvd
        srv.wait_event(kind="log", message="closed 1012")  # the app heard the code its client got
        wait_until(lambda: int(old[1]) not in srv.worker_pids(), 20, what="the old worker to leave")
        with websockets.sync.client.connect(ws_url(srv, "echo", "/codes")) as ws:
            ws.send("again")
            assert ws.recv(timeout=10).split()[0] == "two"


@pytest.mark.timeout(60)
def test_a_worker_retired_for_its_own_reasons_closes_its_socket_with_1001_after_the_grace(
    tmp_path: Path,
) -> None:
    with Served(project(tmp_path, grace=1)) as srv:
        with websockets.sync.client.connect(ws_url(srv, "echo", "/codes")) as ws:
            ws.send("reject")
            pid = int(ws.recv(timeout=10).split()[1])
            srv.wait_event(kind="log", message="worker retired (unhandledrejection); draining")
            ws.send("still open")
            assert ws.recv(timeout=10).endswith(" still open")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, closed.value.rcvd
        srv.wait_event(kind="log", message="closed 1001")
        wait_until(lambda: pid not in srv.worker_pids(), 20, what="the retired worker to leave")
