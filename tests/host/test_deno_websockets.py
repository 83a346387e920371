"""Real-process tests: `Deno.upgradeWebSocket` in a TypeScript function, through serve, with a real
client (`websockets`)."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import websockets.sync.client
from serving import Served, wait_until
from test_serve_deno import project
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edgecli.config import DEFAULT_JWT_SECRET
from edgecli.deno import deno_binary
from edgecli.host.auth import make_key

pytestmark = [
    pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])"),
    pytest.mark.timeout(180),  # the first boot type-checks the function (test_deno_boot.py)
]

ECHO = """
Deno.serve((req: Request) => {
  if (req.headers.get("upgrade") !== "websocket") return new Response("http too");
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => console.log("open", socket.readyState);
  socket.onmessage = (ev: MessageEvent) => {
    if (typeof ev.data !== "string") {
      socket.send(new Uint8Array(ev.data as ArrayBuffer).reverse());
    } else if (ev.data === "close") {
      socket.close(4001, "asked to");
    } else {
      console.log("got", ev.data);
      socket.send(`echo ${ev.data}`);
    }
  };
  socket.addEventListener("close", (ev: CloseEvent) => console.log("closed", ev.code));
  return response;
});
"""


def connect(srv: Served, **kw: Any) -> websockets.sync.client.ClientConnection:
    # The handshake waits for the first worker, which waits for the function's first type check.
    url = f"ws://127.0.0.1:{srv.port}/functions/v1/echo"
    return websockets.sync.client.connect(url, open_timeout=90, **kw)


def test_echo_text_and_bytes_with_tagged_logs_and_one_request_record(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"echo/index.ts": ECHO})) as srv:
        with connect(srv) as ws:
            ws.send("a")
            assert ws.recv(timeout=30) == "echo a"
            ws.send(b"\x01\x02\x03")
            assert ws.recv(timeout=10) == b"\x03\x02\x01"
            ws.send("b")
            assert ws.recv(timeout=10) == "echo b"
            ws.close(4002, "client done")
        record = srv.wait_event(kind="request", method="WEBSOCKET")
        assert record["status"] == 101 and record["path"] == "/functions/v1/echo"
        srv.wait_event(kind="log", message="closed 4002")
        logs = [e["message"] for e in srv.events(kind="log", request=record["request"])]
        assert logs == ["open 1", "got a", "got b", "closed 4002"]
        assert srv.get("echo").text == "http too"  # the same function still serves HTTP


def test_the_function_closing_the_socket_sends_its_code_and_reason(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"echo/index.ts": ECHO})) as srv:
        with connect(srv) as ws:
            ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")
        srv.wait_event(kind="log", message="closed 4001")


def test_verify_jwt_applies_to_the_upgrade(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"echo/index.ts": ECHO}), verify_jwt=True) as srv:
        with pytest.raises(InvalidStatus) as refused:
            connect(srv)
        assert refused.value.response.status_code == 401
        headers = {"Authorization": f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}"}
        with connect(srv, additional_headers=headers) as ws:
            ws.send("x")
            assert ws.recv(timeout=30) == "echo x"


def test_stopping_serve_closes_an_open_socket_and_the_worker_leaves(tmp_path: Path) -> None:
    srv = Served(project(tmp_path, {"echo/index.ts": ECHO})).start()
    try:
        with connect(srv) as ws:
            ws.send("a")
            assert ws.recv(timeout=30) == "echo a"
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGINT)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        # 1012 "service restart", as uvicorn closes its sockets when it stops (and for Python workers).
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value.rcvd
        srv.wait_event(kind="shutdown", function="echo", timeout=30)
    finally:
        assert srv.stop(timeout=30) == 0  # and no Deno worker is left behind


def test_a_handler_that_does_not_upgrade_refuses_with_403(tmp_path: Path) -> None:
    plain = 'Deno.serve(() => new Response("http only"));\n'
    with Served(project(tmp_path, {"echo/index.ts": plain})) as srv:
        with pytest.raises(InvalidStatus) as refused:
            connect(srv)
        assert refused.value.response.status_code == 403
        assert srv.get("echo").text == "http only"


FLOOD = """
Deno.serve((req: Request) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onmessage = (ev: MessageEvent) => {
    socket.send(String(Deno.pid));
    const block = new Uint8Array(1 << 20).fill(122);
    for (let i = 0; i < Number(ev.data); i++) socket.send(block);
    socket.send("done");
  };
  return response;
});
"""


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def slow_socket(srv: Served) -> socket.socket:
    """A WebSocket client that reads only as fast as its caller does: the `websockets` client reads
    ahead of recv() into memory of its own, so it is no slow reader."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=90)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /functions/v1/echo HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: what follows the handshake is the first message's
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    return sock


def send_text(sock: socket.socket, text: str) -> None:
    mask = os.urandom(4)
    data = text.encode()
    sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def read_message(sock: socket.socket) -> bytes:
    """One unfragmented message from the server (unmasked)."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(min(count - len(data), 1 << 16))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    head = exactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(exactly(2))
    elif size == 127:
        size = int.from_bytes(exactly(8))
    assert head[0] & 0x80, "a fragmented message"
    return exactly(size)


def test_messages_to_a_slow_client_wait_for_it_and_serve_holds_only_the_window(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"echo/index.ts": FLOOD})) as srv:
        assert srv.proc is not None
        serve = srv.proc.pid
        with slow_socket(srv) as sock:
            send_text(sock, "1")  # boots the worker first, so that its own growth is not counted
            worker = int(read_message(sock))
            assert read_message(sock) == b"z" * (1 << 20) and read_message(sock) == b"done"
            base = {pid: rss_mb(pid) for pid in (serve, worker)}
            peak = dict(base)
            send_text(sock, "200")
            assert read_message(sock) == str(worker).encode()
            started = time.monotonic()
            for i in range(1, 201):
                assert read_message(sock) == b"z" * (1 << 20)
                if i % 4 == 0:
                    peak = {pid: max(peak[pid], rss_mb(pid)) for pid in peak}
                # About 25 MB/s: far slower than the function sends, whose messages must wait for it.
                time.sleep(max(0.0, started + i / 25 - time.monotonic()))
            assert read_message(sock) == b"done"
        grown = {pid: round(peak[pid] - base[pid]) for pid in peak}
        # A window is 512 KB and a message: without flow control most of the 200 MB piled up in serve.
        assert grown[serve] < 60 and grown[worker] < 120, grown


# Says what binaryType a socket starts with and what each message arrived as, then echoes it; a text
# message sets binaryType. Runs unchanged under bare `deno run`, which calls onListen (our worker doesn't).
BINARY_TYPE = """
Deno.serve({ port: 0, onListen: ({ port }) => console.log(`listening ${port}`) }, (req: Request) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => socket.send(`starts as ${socket.binaryType}`);
  socket.onmessage = (ev: MessageEvent) => {
    const data = ev.data;
    if (typeof data === "string") socket.binaryType = data as BinaryType;
    const size = typeof data === "string" ? data.length : (data.size ?? data.byteLength);
    socket.send(`${Object.prototype.toString.call(data)} of ${size}, binaryType ${socket.binaryType}`);
    if (typeof data !== "string") socket.send(data);
  };
  return response;
});
"""


def binary_type_exchange(url: str) -> list[str | bytes]:
    seen: list[str | bytes] = []
    with websockets.sync.client.connect(url, open_timeout=90) as ws:
        seen.append(ws.recv(timeout=30))
        for message in [b"\x01\x02\x03", "blob", b"\x04\x05", "arraybuffer", b"\x06"]:
            ws.send(message)
            seen.append(ws.recv(timeout=10))
            if isinstance(message, bytes):
                seen.append(ws.recv(timeout=10))
    return seen


def test_binary_type_and_binary_messages_are_as_under_bare_deno(tmp_path: Path) -> None:
    root = project(tmp_path, {"echo/index.ts": BINARY_TYPE})
    entry = root / "supabase" / "functions" / "echo" / "index.ts"
    deno = deno_binary()
    assert deno is not None
    out_path = tmp_path / "bare-deno.out"
    with open(out_path, "wb") as out:
        bare = subprocess.Popen(
            [deno, "run", "--allow-net", str(entry)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        found = wait_until(lambda: re.search(r"listening (\d+)", out_path.read_text()), 60, what="bare deno")
        under_deno = binary_type_exchange(f"ws://127.0.0.1:{found[1]}/")
    finally:
        bare.terminate()
        bare.wait(10)
    with Served(root) as srv:
        under_serve = binary_type_exchange(f"ws://127.0.0.1:{srv.port}/functions/v1/echo")
    assert under_serve == under_deno
    assert under_deno == [
        "starts as arraybuffer",  # not a browser's "blob"
        "[object ArrayBuffer] of 3, binaryType arraybuffer",
        b"\x01\x02\x03",
        "[object String] of 4, binaryType blob",
        "[object Blob] of 2, binaryType blob",
        b"\x04\x05",  # a Blob sent back goes as bytes
        "[object String] of 11, binaryType arraybuffer",
        "[object ArrayBuffer] of 1, binaryType arraybuffer",
        b"\x06",
    ]
