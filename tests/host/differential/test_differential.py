"""Differential tests: the same requests to bare uvicorn and to `edgecli serve`, the same observations.

Each case in CASES is one probe: it talks to a `Target` and returns what it observed (status, headers
minus edgecli's documented additions, body bytes, chunk arrival, what the app saw in its scope and
receive(), disconnects seen, WebSocket frames). The test runs every probe against both servers and
compares. A new case is one entry in the table.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets.sync.client
from differential_servers import BareUvicorn, Target, edgecli_target, project
from serving import Served, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

ADDED = {"x-request-id", "date"}  # edgecli adds x-request-id; date is the clock's

Probe = Callable[[Target], Any]


def view(r: httpx.Response, body: bool = True) -> dict[str, Any]:
    headers = [[k, v] for k, v in r.headers.multi_items() if k not in ADDED]
    seen: dict[str, Any] = {"status": r.status_code, "headers": headers, "date": "date" in r.headers}
    if body and r.headers.get("content-type") == "application/json":
        seen["json"] = r.json()
    elif body:
        seen["body"] = r.text if len(r.content) < 65536 else hashlib.sha256(r.content).hexdigest()
    return seen


def get(path: str, **kw: Any) -> Probe:
    return lambda t: view(httpx.get(t.url(path), timeout=30, **kw))


def request(method: str, path: str, **kw: Any) -> Probe:
    return lambda t: view(httpx.request(method, t.url(path), timeout=30, **kw))


def raw(t: Target, data: bytes, until: bytes = b"") -> bytes:
    """Send `data` on a fresh connection; read until the server closes it or `until` has arrived."""
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while not (until and until in received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def status_line(response: bytes) -> str:
    return response.split(b"\r\n", 1)[0].decode()


def malformed(t: Target) -> Any:
    answer = raw(t, b"THIS IS NOT HTTP\r\n\r\n")
    after = httpx.get(t.url("/star/plain"), timeout=10).status_code
    return {"answer": status_line(answer), "after": after}


def expect_continue(t: Target) -> Any:
    body = b"x" * 1000
    head = (
        f"POST {t.prefix}/raw/upload HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
        "expect: 100-continue\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(65536)
        sock.sendall(body)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    return {
        "interim": status_line(interim),
        "final": status_line(rest),
        "body": rest.split(b"\r\n\r\n")[-1].decode(),
    }


def chunked_upload(t: Target) -> Any:
    data = os.urandom(3 << 20)

    def parts() -> Iterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    r = httpx.post(t.url("/raw/upload"), content=parts(), timeout=30)
    return {
        "status": r.status_code,
        "size": r.json()["size"],
        "intact": r.json()["sha"] == hashlib.sha256(data).hexdigest(),
    }


def chunk_arrival(t: Target) -> Any:
    with httpx.stream("GET", t.url("/raw/chunks"), timeout=30) as r:
        return {"status": r.status_code, "pieces": [piece.decode() for piece in r.iter_raw()]}


def keep_alive_across_functions(t: Target) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=10)
    seen = []
    for path in ("/star/plain", "/raw/cookies", "/fast/items/3", "/raw/scope"):
        conn.request("GET", t.prefix + path)
        response = conn.getresponse()
        response.read()
        seen.append((response.status, conn.sock is not None))
        sock = conn.sock
    conn.close()
    return {"seen": seen, "one_connection": sock is not None}


def read_answer(stream: Any) -> list[Any]:
    """One response read off a raw connection: [status, its body]."""
    line = stream.readline()
    if not line:
        return ["the connection closed", None]
    status = int(line.split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") != b"chunked":
        return [status, stream.read(int(headers.get(b"content-length", 0))).decode()]
    body = b""
    while size := int(stream.readline(), 16):
        body += stream.read(size + 2)[:-2]
    stream.readline()
    return [status, body.decode()]


def pipelined(t: Target) -> Any:
    """Requests written in one go on a kept-alive connection, for one function and then another: each
    is answered, in order, and the connection stays open. On edgecli the first answer lends the
    connection to the function's worker, which reads the next ones."""

    def ask(path: str, body: bytes = b"") -> bytes:
        method = "POST" if body else "GET"
        head = f"{method} {t.prefix}{path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
        return head.encode() + body

    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        sock.sendall(ask("/star/plain"))
        seen = [read_answer(stream)]
        for batch in (
            [ask("/star/plain"), ask("/star/seen?key=none"), ask("/star/plain")],  # all the worker's
            [ask("/star/plain"), ask("/raw/upload", b"y" * 5000), ask("/star/plain")],  # one for another
        ):
            sock.sendall(b"".join(batch))
            seen.append([read_answer(stream) for _ in batch])
        sock.sendall(ask("/star/plain"))
        seen.append(read_answer(stream))
        stream.close()
    return seen


def websocket_echo(path: str, subprotocols: list[str] | None = None) -> Probe:
    def probe(t: Target) -> Any:
        frames: list[Any] = []
        with websockets.sync.client.connect(t.ws_url(path), subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
            frames.append(ws.subprotocol)
            for message in ("hi", b"\x00\x01", "é✓"):
                ws.send(message)
                frames.append(repr(ws.recv(timeout=10)))
            ws.send("bye")
            try:
                frames.append(repr(ws.recv(timeout=10)))
            except ConnectionClosed as exc:
                frames.append([exc.rcvd.code, exc.rcvd.reason] if exc.rcvd else None)
        return frames

    return probe


def websocket_refused(t: Target) -> Any:
    try:
        with websockets.sync.client.connect(t.ws_url("/raw/refuse")):
            return "accepted"
    except InvalidStatus as exc:
        return exc.response.status_code


def state(t: Target, key: str) -> Any:
    return httpx.get(t.url("/star/seen"), params={"key": key}, timeout=10).json()["state"]


def disconnect_seen(route: str) -> Probe:
    """The client leaves mid-request: what the app saw (`is_disconnected()`, a cancelled stream)."""

    def probe(t: Target) -> Any:
        key = f"{route}-{time.monotonic_ns()}"
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        sock.sendall(f"GET {t.prefix}/star/{route}?key={key} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        wait_until(lambda: state(t, key) == "started", 10, what="the app to start")
        sock.close()
        final = wait_until(lambda: state(t, key) not in (None, "started") and state(t, key), 10)
        return final

    return probe


def background_task(t: Target) -> Any:
    key = f"bg-{time.monotonic_ns()}"
    r = httpx.get(t.url("/star/background"), params={"key": key}, timeout=10)
    return [view(r), wait_until(lambda: state(t, key), 10, what="the background task")]


def fastapi_docs(t: Target) -> Any:
    docs = httpx.get(t.url("/fast/docs"), timeout=10)
    spec = httpx.get(t.url("/fast/openapi.json"), timeout=10)
    return [view(docs), view(spec)]


CASES: dict[str, Probe] = {
    "scope of a GET, raw_path kept": get(
        "/raw/scope/a%2Fb/%C3%A9?x=1&y=%FF&z", headers=[("x-d", "1"), ("x-d", "2")]
    ),
    "scope of a POST body": request("POST", "/raw/scope", content=b"b" * 100_000),
    "unicode query string": get("/star/info/caf%C3%A9", params={"q": "é✓", "r": ["1", "2"]}),
    "long header": get("/raw/scope", headers={"x-long": "a" * 8000}),
    # serve refuses a head over 64 KB (431, which bare uvicorn never sends); under it, the two agree.
    "60 KB of headers": get("/raw/scope", headers={f"x-h{i}": "a" * 1000 for i in range(60)}),
    "HEAD": request("HEAD", "/star/plain"),
    "duplicate set-cookie": get("/raw/cookies"),
    "redirect and url_for": get("/star/redirect"),
    "204 without body": get("/raw/nothing"),
    "5 MB single body": get("/raw/big"),
    "chunked upload": chunked_upload,
    "chunks arrive one by one": chunk_arrival,
    "Expect: 100-continue": expect_continue,
    "keep-alive across functions": keep_alive_across_functions,
    "pipelined requests": pipelined,
    "malformed HTTP": malformed,
    "FastAPI route": get("/fast/items/5", params={"q": "x"}),
    "FastAPI JSON body": request("POST", "/fast/echo", json={"a": [1, "é"]}),
    "FastAPI docs": fastapi_docs,
    "Starlette WebSocket": websocket_echo("/star/ws"),
    "raw WebSocket subprotocol": websocket_echo("/raw/ws", ["chat"]),
    "WebSocket refused before accept": websocket_refused,
    "is_disconnected() in a plain handler": disconnect_seen("wait"),
    "streaming response cancelled": disconnect_seen("sse"),
    "BackgroundTask": background_task,
}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Target, Target]]:
    root = project(tmp_path_factory.mktemp("differential") / "project")
    with BareUvicorn(root) as bare, Served(root) as srv:
        yield bare.target, edgecli_target(srv)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(CASES))
def test_same_as_bare_uvicorn(case: str, targets: tuple[Target, Target]) -> None:
    bare, edge = targets
    probe = CASES[case]
    expected = bare.normalize(probe(bare))
    got = edge.normalize(probe(edge))
    assert got == expected, "\n".join(differences(got, expected))


def differences(got: Any, expected: Any, where: str = "") -> list[str]:
    """Where two observations part, leaf by leaf: `where: edgecli != uvicorn`."""
    if isinstance(got, dict) and isinstance(expected, dict):
        keys = sorted(set(got) | set(expected))
        return [d for k in keys for d in differences(got.get(k), expected.get(k), f"{where}.{k}")]
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        return [
            d
            for i, (g, e) in enumerate(zip(got, expected, strict=True))
            for d in differences(g, e, f"{where}[{i}]")
        ]
    return [] if got == expected else [f"{where}: edgecli {got!r} != uvicorn {expected!r}"]
