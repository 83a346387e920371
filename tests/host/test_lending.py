"""Real-process tests of lent connections: after serve answers one request of a keep-alive connection
through a per_worker Python worker, it lends the connection to that worker, which answers the next
requests on it itself, and gives back (with what it read) any request it must not serve.

What is checked is what a client sees (answers identical to serve's, on the same connection, with no
connection error) and the events serve records; that a connection was lent at all is seen from the
outside: the worker process holds a TCP socket connected to the client's port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest
from serving import Served, make_project, replace_function, stored_events, wait_until

from edgecli.config import Config
from edgecli.host.auth import make_key

SECRET = "lending-test-secret-with-more-than-32-characters"
ANON = make_key(SECRET, "anon")
SERVICE = make_key(SECRET, "service_role")

# Says who answered and what it saw; `do` picks a failure, a busy loop, a stream, a sleep or an echo.
PROBE = """
import asyncio, hashlib, os, sys, time
from starlette.responses import JSONResponse, Response, StreamingResponse

NAME = "NAME_HERE"

async def handler(req):
    do = req.query_params.get("do", "")
    if do == "raise":
        raise RuntimeError("boom on purpose")
    if do == "none":
        return None
    if do == "exit":  # the worker dies, no limit involved
        os._exit(3)
    if do == "spin":  # blocks the event loop: only a CPU limit ends it
        end = time.process_time() + float(req.query_params.get("s", "30"))
        while time.process_time() < end:
            pass
    if do == "sleep":
        print("sleeping", req.query_params.get("tag", ""), flush=True)
        await asyncio.sleep(float(req.query_params.get("s", "5")))
    if do == "streamspin":  # a response started, then a busy loop: only a CPU limit ends it
        async def started():
            yield "first\\n"
            end = time.process_time() + 30
            while time.process_time() < end:
                pass
            yield "never\\n"
        return StreamingResponse(started(), media_type="text/plain")
    if do == "after":  # answered at once; a background task of the response's runs on after it
        from starlette.background import BackgroundTask
        pause = BackgroundTask(asyncio.sleep, float(req.query_params.get("s", "1")))
        return JSONResponse({"pid": os.getpid()}, background=pause)
    if do == "ignore":  # answered without reading the body, as a 404 or 405 of a router is
        return JSONResponse({"ignored": True})
    if do == "big":
        return Response(b"x" * (int(req.query_params.get("mb", "16")) << 20), media_type="text/plain")
    if do == "stream":
        async def chunks():
            for i in range(5):
                yield f"chunk {i}\\n"
                await asyncio.sleep(0.4)
        return StreamingResponse(chunks(), media_type="text/plain")
    body = await req.body()
    if do == "echo":
        return Response(body, media_type="application/octet-stream")
    return JSONResponse({
        "name": NAME,
        "pid": os.getpid(),
        "method": req.method,
        "path": req.url.path,
        "n": req.query_params.get("n"),
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "claims": req.headers.get("x-edgecli-jwt-claims"),
        "transfer_encoding": req.headers.get("transfer-encoding"),
    })
"""

CONFIG = f"""
[auth]
jwt_secret = "{SECRET}"

[edge_runtime]
policy = "per_worker"
graceful_exit_timeout_sec = 2

[functions.hello]
verify_jwt = false
max_body_mb = 8

[functions.other]
verify_jwt = false

[functions.small]
verify_jwt = false
max_body_mb = 1
request_idle_timeout_sec = 1
"""
# `guarded` keeps the default: verify_jwt = true


def probe(name: str) -> str:
    return PROBE.replace("NAME_HERE", name)


def lending_project(root: Path, extra: str = "") -> Path:
    functions = {name: probe(name) for name in ("hello", "other", "small", "guarded")}
    return make_project(root, functions, CONFIG + extra)


def serving(root: Path, extra: str = "") -> Served:
    return Served(lending_project(root, extra), verify_jwt=True)


# -- seeing a lent connection -----------------------------------------------------------------------------


def client_port(r: httpx.Response) -> int:
    """The local port of the connection `r` came back on."""
    return int(r.extensions["network_stream"].get_extra_info("client_addr")[1])


def holders(srv: Served, port: int) -> set[int]:
    """Pids of serve's descendants (not serve) holding a TCP socket connected to the client's `port`."""
    assert srv.proc is not None
    found: set[int] = set()
    for proc in srv.family():
        if proc.pid == srv.proc.pid:
            continue
        try:
            conns = (
                proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
            )
        except psutil.Error:
            continue
        if any(c.raddr and c.raddr.port == port for c in conns):
            found.add(proc.pid)
    return found


def wait_lent(srv: Served, port: int, timeout: float = 10.0) -> set[int]:
    """Wait until a worker (a descendant of serve) holds the connection of the client's `port`."""
    return wait_until(
        lambda: holders(srv, port) & srv.worker_pids() or holders(srv, port),
        timeout,
        what=f"a worker to hold the connection of port {port}\n{srv.output()[-3000:]}",
    )


def keep_alive(srv: Served) -> httpx.Client:
    """A client with at most one connection, so every request goes on the same one while it lasts."""
    return httpx.Client(
        base_url=srv.base_url, timeout=30, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
    )


@contextlib.contextmanager
def lent_client(srv: Served, name: str = "hello", **kw: Any) -> Iterator[tuple[httpx.Client, int]]:
    """A keep-alive client whose connection is lent to `name`'s worker (after two requests), and its
    local port; closed after the block."""
    with keep_alive(srv) as client:
        for _ in range(2):
            r = client.get(f"/functions/v1/{name}", **kw)
            assert r.status_code == 200, r.text
        port = client_port(r)
        wait_lent(srv, port)
        yield client, port


def fresh(srv: Served, method: str, path: str, **kw: Any) -> httpx.Response:
    """`method path` on a connection of its own, closed after it: what serve answers unlent."""
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        return client.request(method, path, **kw)


def shape(r: httpx.Response) -> tuple[int, str | None, str | None, str | None, bytes]:
    """What must be identical between two answers, the request id in the body made neutral."""
    rid = r.headers.get("x-request-id") or ""
    body = r.content.replace(rid.encode(), b"<id>") if rid else r.content
    body = re.sub(rb'"pid": ?\d+', b'"pid":0', body)
    return (
        r.status_code,
        r.headers.get("content-type"),
        r.headers.get("sb-error-code"),
        "x-request-id" if rid else None,
        body,
    )


# -- raw HTTP/1.1 ------------------------------------------------------------------------------------------


def read_response(stream: Any) -> tuple[int, dict[str, str], bytes] | None:
    """One response read from a socket's file, or None at EOF before any byte of it."""
    line = stream.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(stream.readline().split(b";")[0], 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    else:
        body = stream.read(int(headers.get("content-length", "0")))
    return status, headers, body


def get_bytes(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as served:
        yield served


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_keep_alive_client_is_answered_by_its_worker_with_one_event_a_request(srv: Served) -> None:
    with keep_alive(srv) as client:
        answers: list[httpx.Response] = []
        for n in range(20):
            headers = {"x-request-id": f"client-id-{n}"} if n % 5 == 4 else {}
            r = client.get("/functions/v1/hello", params={"n": str(n)}, headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["name"], body["n"], body["method"]) == ("hello", str(n), "GET")
            if headers:
                assert r.headers["x-request-id"] == headers["x-request-id"]
            answers.append(r)
            if n == 1:
                assert wait_lent(srv, client_port(r))
        ports = {client_port(r) for r in answers}
        assert len(ports) == 1, ports  # one connection throughout
        assert holders(srv, ports.pop()), "the worker gave the connection back while the client kept it"
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == 20, ids
    assert len({r.json()["pid"] for r in answers}) == 1
    events = wait_until(
        lambda: (found := srv.events(kind="request")) and len(found) >= 20 and found,
        10,
        what=f"20 request events\n{srv.output()[-3000:]}",
    )
    assert len(events) == 20, events
    assert [e["request"] for e in events] == ids
    for event in events:
        assert (event["status"], event["method"], event["function"]) == (200, "GET", "hello"), event
        assert event["path"] == "/functions/v1/hello", event
        assert event["worker"], event
    assert len({e["worker"] for e in events}) == 1


@pytest.mark.timeout(120)
def test_requests_the_worker_gives_back_are_answered_as_on_a_fresh_connection(srv: Served) -> None:
    def chunked() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000

    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/functions/v1/other", {}),
        ("GET", "/functions/v1/nosuch", {}),
        ("GET", "/functions/v1/guarded", {}),
        ("GET", "/functions/v1/guarded", {"headers": {"authorization": "Bearer garbage"}}),
        ("GET", "/functions/v1/guarded", {"headers": {"authorization": f"Basic {ANON}"}}),
        ("POST", "/functions/v1/small", {"content": b"x" * (2 << 20)}),
        ("OPTIONS", "/functions/v1/hello", {}),
        ("OPTIONS", "/functions/v1/guarded", {}),
        ("POST", "/functions/v1/hello", {"content": chunked}),
        ("GET", "/functions/v1", {}),
        ("GET", "/functions/v1/hellox", {}),
        ("GET", "/functions/v1/hello/a/b?n=%2F%20x", {}),
        ("HEAD", "/functions/v1/hello", {}),
        ("GET", "/functions/v1/hello", {"headers": {"x-big": "v" * 60_000}}),
        ("GET", "/functions/v1/hello", {"headers": {"connection": "close"}}),
        ("GET", "/functions/v1/hello", {"headers": {"upgrade": "websocket", "connection": "upgrade"}}),
        ("GET", "/functions/v1/guarded", {"headers": {"authorization": f"Bearer {ANON}"}}),
        ("GET", "/FUNCTIONS/v1/hello", {}),
        ("GET", "/functions/v1/hello/../other", {}),
        ("GET", "/functions/v1/hello%2F..%2Fother", {}),
        ("GET", "//functions/v1/hello", {}),
        ("GET", "/functions/v1/hello?", {}),
    ]
    with lent_client(srv) as (client, _port):
        for method, path, kw in cases:
            what = f"{method} {path} {kw.get('headers', '')}"
            fresh_kw = {**kw, "content": kw["content"]()} if callable(kw.get("content")) else kw
            expected = fresh(srv, method, path, **fresh_kw)
            lent_kw = {**kw, "content": kw["content"]()} if callable(kw.get("content")) else kw
            try:
                r = client.request(method, path, **lent_kw)
            except httpx.HTTPError as exc:
                raise AssertionError(f"{what} on a lent connection: {exc!r}\n{srv.output()[-3000:]}") from exc
            assert shape(r) == shape(expected), what
            if path.endswith("/hello") and method == "POST":
                assert r.json()["size"] == 2000 and r.json()["transfer_encoding"] == "chunked"
            # the connection keeps working, and the worker can have it again
            again = client.get("/functions/v1/hello", params={"n": "again"})
            assert again.status_code == 200 and again.json()["n"] == "again", (what, again.text)
            again = client.get("/functions/v1/hello", params={"n": "again2"})
            assert again.status_code == 200, (what, again.text)
            wait_lent(srv, client_port(again))
        expected_401 = {
            "/functions/v1/guarded": b'{"msg":"Error: Missing authorization header"}',
        }
        r = client.get("/functions/v1/guarded")
        assert (r.status_code, r.content) == (401, expected_401["/functions/v1/guarded"])
        r = client.get("/functions/v1/guarded", headers={"authorization": "Bearer garbage"})
        assert (r.status_code, r.content) == (401, b'{"msg":"Invalid JWT"}')
    statuses = sorted({e["status"] for e in srv.events(kind="request")})
    assert 401 in statuses and 413 in statuses and 404 in statuses, statuses


@pytest.mark.timeout(90)
def test_verified_claims_on_a_lent_connection_and_a_switch_of_key(srv: Served) -> None:
    anon = {"authorization": f"Bearer {ANON}"}
    service = {"authorization": f"Bearer {SERVICE}"}
    with lent_client(srv, "guarded", headers=anon) as (client, port):
        for _ in range(3):
            r = client.get("/functions/v1/guarded", headers=anon)
            assert r.status_code == 200, r.text
            assert json.loads(r.json()["claims"])["role"] == "anon"
            assert client_port(r) == port
        forged = {**anon, "x-edgecli-jwt-claims": '{"role":"service_role","forged":true}'}
        r = client.get("/functions/v1/guarded", headers=forged)
        assert r.status_code == 200, r.text
        claims = json.loads(r.json()["claims"])
        assert claims["role"] == "anon" and "forged" not in claims, claims
        for _ in range(3):
            r = client.get("/functions/v1/guarded", headers=service)
            assert r.status_code == 200, r.text
            assert json.loads(r.json()["claims"])["role"] == "service_role"
        forged = {**service, "x-edgecli-jwt-claims": '{"role":"anon","forged":true}'}
        r = client.get("/functions/v1/guarded", headers=forged)
        claims = json.loads(r.json()["claims"])
        assert claims["role"] == "service_role" and "forged" not in claims, claims
        r = client.get("/functions/v1/guarded", headers=anon)
        assert json.loads(r.json()["claims"])["role"] == "anon"
        r = client.get("/functions/v1/guarded", headers={"authorization": "Bearer garbage"})
        assert (r.status_code, r.content) == (401, b'{"msg":"Invalid JWT"}')
        # a function without verification never sees a claims header, forged or not
        r = client.get("/functions/v1/hello", headers={"x-edgecli-jwt-claims": '{"role":"service_role"}'})
        r = client.get("/functions/v1/hello", headers={"x-edgecli-jwt-claims": '{"role":"service_role"}'})
        assert r.status_code == 200 and r.json()["claims"] is None, r.text


@pytest.mark.timeout(90)
@pytest.mark.parametrize("do", ["raise", "none"])
def test_a_failing_handler_on_a_lent_connection_is_a_500_as_through_serve(srv: Served, do: str) -> None:
    expected = fresh(srv, "GET", "/functions/v1/hello", params={"do": do})
    assert expected.status_code == 500 and expected.json()["code"] == "WORKER_ERROR", expected.text
    with lent_client(srv) as (client, _port):
        r = client.get("/functions/v1/hello", params={"do": do})
        assert shape(r) == shape(expected)
        rid = r.headers["x-request-id"]
        assert rid != expected.headers["x-request-id"]
        r2 = client.get("/functions/v1/hello", params={"do": do})
        assert shape(r2) == shape(expected)
        ok = client.get("/functions/v1/hello")
        assert ok.status_code == 200, ok.text
    logged = srv.wait_event(lambda e: e["request"] == rid and e["level"] == "error", kind="log")
    assert ("boom on purpose" if do == "raise" else "returned NoneType") in logged["message"]
    event = srv.wait_event(lambda e: e["request"] == rid, kind="request")
    assert (event["status"], event["function"]) == (500, "hello"), event
    assert srv.proc is not None and srv.proc.poll() is None
    assert fresh(srv, "GET", "/functions/v1/hello").status_code == 200


@pytest.mark.timeout(90)
def test_a_cpu_limit_killing_a_lent_request_is_a_546_and_the_next_request_works(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    config = (root / "supabase" / "config.toml").read_text()
    config = config.replace(
        "graceful_exit_timeout_sec = 2\n",
        "graceful_exit_timeout_sec = 1\ncpu_time_soft_limit_ms = 1500\ncpu_time_hard_limit_ms = 2000\n",
    )
    (root / "supabase" / "config.toml").write_text(config)
    with Served(root, verify_jwt=True) as srv:
        with lent_client(srv) as (client, _port):
            first = client.get("/functions/v1/hello").json()["pid"]
            r = client.get("/functions/v1/hello", params={"do": "spin", "s": "20"})
            assert r.status_code == 546, r.text
            assert r.headers.get("sb-error-code") == "WORKER_LIMIT", dict(r.headers)
            assert r.json()["code"] == "WORKER_LIMIT", r.text
            srv.wait_event(kind="shutdown", function="hello", reason="cpu")
            nxt = client.get("/functions/v1/hello")
            assert nxt.status_code == 200, nxt.text
            assert nxt.json()["pid"] != first
        event = srv.wait_event(lambda e: e["status"] == 546, kind="request")
        assert event["function"] == "hello"


@pytest.mark.timeout(90)
def test_an_edit_reaches_a_keep_alive_client_without_a_connection_error(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    with Served(root, verify_jwt=True) as srv, lent_client(srv) as (client, _port):
        old = client.get("/functions/v1/hello").json()
        assert old["name"] == "hello"
        replace_function(root, "hello", probe("hello-v2"))

        def new_code() -> bool:
            r = client.get("/functions/v1/hello")  # an exception here fails the test
            assert r.status_code == 200, r.text
            return bool(r.json()["name"] == "hello-v2")

        wait_until(new_code, 20, what=f"the new code\n{srv.output()[-3000:]}")
        for _ in range(5):
            r = client.get("/functions/v1/hello")
            assert (r.status_code, r.json()["name"]) == (200, "hello-v2")
        wait_lent(srv, client_port(r))


@pytest.mark.timeout(90)
def test_a_client_leaving_mid_request_on_a_lent_connection_is_a_499(srv: Served) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(get_bytes("/functions/v1/hello"))
            answer = read_response(stream)
            assert answer is not None and answer[0] == 200, answer
        wait_lent(srv, sock.getsockname()[1])
        sock.sendall(get_bytes("/functions/v1/hello?do=sleep&s=5&tag=leaving"))
        srv.wait_event(lambda e: "sleeping leaving" in e["message"], kind="log")
        stream.close()
    event = srv.wait_event(lambda e: e["status"] == 499, kind="request", timeout=15)
    assert (event["function"], event["method"]) == ("hello", "GET"), event
    assert "do=sleep" not in event["path"]
    assert fresh(srv, "GET", "/functions/v1/hello").status_code == 200


@pytest.mark.timeout(90)
def test_a_stream_arrives_progressively_and_an_upload_is_echoed_intact(srv: Served) -> None:
    with lent_client(srv) as (client, port):
        arrivals: list[float] = []
        with client.stream("GET", "/functions/v1/hello", params={"do": "stream"}) as r:
            assert r.status_code == 200
            assert client_port(r) == port
            text = ""
            for chunk in r.iter_text():
                arrivals.append(time.monotonic())
                text += chunk
        assert text == "".join(f"chunk {i}\n" for i in range(5))
        assert len(arrivals) >= 3, arrivals  # not one block at the end
        assert arrivals[-1] - arrivals[0] >= 0.8, arrivals
        data = os.urandom(5 << 20)
        r = client.post("/functions/v1/hello", params={"do": "echo"}, content=data)
        assert r.status_code == 200, r.text[:300]
        assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()
        assert len(r.content) == len(data)
        r = client.post("/functions/v1/hello", content=data)
        assert r.json()["size"] == len(data) and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert client.get("/functions/v1/hello").status_code == 200


@pytest.mark.timeout(90)
def test_serve_stops_at_once_with_idle_lent_connections(tmp_path: Path) -> None:
    srv = serving(tmp_path).start()
    try:
        with contextlib.ExitStack() as stack:
            for name in ("hello", "hello", "other", "small"):
                stack.enter_context(lent_client(srv, name))
            began = time.monotonic()
            code = srv.stop(signal.SIGINT, timeout=30)
            took = time.monotonic() - began
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill_all()
    assert code == 0, srv.output()[-3000:]
    assert took < 8, f"serve took {took:.1f} s to stop\n{srv.output()[-3000:]}"


@pytest.mark.timeout(90)
def test_requests_pipelined_in_one_write_on_a_lent_connection_are_all_answered_in_order(srv: Served) -> None:
    """As from bare uvicorn: each request of the write is answered, in order, whether the worker serves
    it (with a body or without), or gives it back to serve whole (another function's); the connection
    stays open. The worker stops parsing at the request after the one it serves, and reads it once that
    one's answer is out."""

    def ask(name: str, n: int) -> bytes:
        return get_bytes(f"/functions/v1/{name}?n={n}")

    post = b"POST /functions/v1/hello?n=2 HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n" + b"b" * 5000
    batches = [
        [ask("hello", 1), ask("hello", 2)],
        [ask("hello", 1), post, ask("hello", 3)],
        [ask("hello", 1), ask("other", 2), ask("hello", 3)],
        [ask("hello", 1) + b"\r\n", ask("hello", 2)],  # a stray CRLF between two requests
    ]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        for batch in batches:
            sock.sendall(get_bytes("/functions/v1/hello"))
            assert (answer := read_response(stream)) is not None and answer[0] == 200, answer
            wait_lent(srv, sock.getsockname()[1])
            sock.sendall(b"".join(batch))
            answers = [read_response(stream) for _ in batch]
            assert all(answer is not None for answer in answers), (batch, answers)
            seen = [(a[0], json.loads(a[2])["name"], json.loads(a[2])["n"]) for a in answers if a is not None]
            names = ["other" if b"/other" in request else "hello" for request in batch]
            assert seen == [(200, name, str(n)) for n, name in enumerate(names, 1)], (batch, answers)
            ids = {a[1]["x-request-id"] for a in answers if a is not None}
            assert len(ids) == len(batch)
        stream.close()


@pytest.mark.timeout(90)
def test_another_function_s_request_after_a_body_its_handler_did_not_read_is_answered(srv: Served) -> None:
    """The worker reads and drops the unread body, as uvicorn does; the next request begins in the read
    the body ends in, and goes back to serve whole. It was dropped with the connection before."""
    body = os.urandom(3 << 20)
    for round_ in range(10):
        with lent_client(srv) as (client, _):
            ignored = client.post("/functions/v1/hello", params={"do": "ignore"}, content=body)
            assert ignored.status_code == 200 and ignored.json() == {"ignored": True}
            other = client.get("/functions/v1/other", params={"n": round_})
            assert other.status_code == 200 and other.json()["name"] == "other", (round_, other.text)
            assert client_port(other) == client_port(ignored)


@pytest.mark.timeout(90)
def test_a_lent_answer_has_the_same_header_names_as_through_serve(srv: Served) -> None:
    with keep_alive(srv) as client:
        through_serve = client.get("/functions/v1/hello")
        wait_lent(srv, client_port(through_serve))
        lent = client.get("/functions/v1/hello")
        assert client_port(lent) == client_port(through_serve)
        assert sorted(lent.headers.keys()) == sorted(through_serve.headers.keys()), (
            dict(through_serve.headers),
            dict(lent.headers),
        )


@pytest.mark.timeout(90)
def test_no_response_start_on_a_lent_connection_is_a_504_after_the_idle_timeout(srv: Served) -> None:
    expected = fresh(srv, "GET", "/functions/v1/small", params={"do": "sleep", "s": "4"})
    assert expected.status_code == 504, expected.text
    with lent_client(srv, "small") as (client, _port):
        began = time.monotonic()
        r = client.get("/functions/v1/small", params={"do": "sleep", "s": "4"})
        took = time.monotonic() - began
        assert shape(r) == shape(expected)
        assert r.headers["sb-error-code"] == "IDLE_TIMEOUT"
        assert 0.8 < took < 3.5, took
        ok = client.get("/functions/v1/small")
        assert ok.status_code == 200, ok.text
    event = srv.wait_event(lambda e: e["request"] == r.headers["x-request-id"], kind="request")
    assert event["status"] == 504, event


@pytest.mark.timeout(90)
def test_expect_100_continue_on_a_lent_connection_is_given_back_and_answered(srv: Served) -> None:
    body = b"y" * 3000
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(get_bytes("/functions/v1/hello"))
            answer = read_response(stream)
            assert answer is not None and answer[0] == 200, answer
        wait_lent(srv, sock.getsockname()[1])
        head = (
            "POST /functions/v1/hello HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode())
        interim = read_response(stream)
        assert interim is not None and interim[0] in (100, 200), interim
        if interim[0] == 100:
            sock.sendall(body)
            final = read_response(stream)
        else:  # answered at once, without the body (a server may): the connection must then end
            final = interim
        assert final is not None and final[0] == 200, final
        if interim[0] == 100:
            assert json.loads(final[2])["size"] == len(body), final
            sock.sendall(get_bytes("/functions/v1/hello?n=after"))
            after = read_response(stream)
            assert after is not None and after[0] == 200 and json.loads(after[2])["n"] == "after", after
        stream.close()


@pytest.mark.timeout(90)
def test_lent_requests_are_in_the_store_once_each(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    with Served(root, verify_jwt=True) as srv:
        with lent_client(srv) as (client, port):
            ids = [client.get("/functions/v1/hello").headers["x-request-id"] for _ in range(5)]
            assert holders(srv, port)
        wait_until(
            lambda: {e["request"] for e in srv.events(kind="request")} >= set(ids),
            10,
            what="the request events",
        )
    stored = [e for e in stored_events(Config(project_dir=root).events_db) if e.kind == "request"]
    stored_ids = [e.request for e in stored]
    for rid in ids:
        assert stored_ids.count(rid) == 1, (rid, stored_ids)
    assert all(e.fields["status"] == 200 and e.function == "hello" for e in stored), stored


@pytest.mark.timeout(90)
def test_an_idle_lent_connection_survives_its_worker_retiring_on_a_soft_limit(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    config = (root / "supabase" / "config.toml").read_text()
    config = config.replace(
        "graceful_exit_timeout_sec = 2\n",
        "graceful_exit_timeout_sec = 1\ncpu_time_soft_limit_ms = 400\ncpu_time_hard_limit_ms = 20000\n",
    )
    (root / "supabase" / "config.toml").write_text(config)
    with Served(root, verify_jwt=True) as srv, lent_client(srv) as (client, _port):
        first = client.get("/functions/v1/hello", params={"do": "spin", "s": "0.8"})
        assert first.status_code == 200, first.text
        srv.wait_event(lambda e: "retired (cpu)" in e["message"], kind="log", function="hello")
        srv.wait_event(kind="shutdown", function="hello", timeout=20)  # it drained: its lent connection back
        for n in range(5):
            r = client.get("/functions/v1/hello", params={"n": str(n)})  # no connection error
            assert r.status_code == 200 and r.json()["n"] == str(n), r.text
        assert r.json()["pid"] != first.json()["pid"]


@pytest.mark.timeout(90)
def test_a_token_that_expires_while_its_connection_is_lent_is_refused(srv: Served) -> None:
    exp = int(time.time()) + 3
    token = jwt.encode({"role": "anon", "iss": "supabase-demo", "exp": exp}, SECRET)
    auth = {"authorization": f"Bearer {token}"}
    with lent_client(srv, "guarded", headers=auth) as (client, _port):
        r = client.get("/functions/v1/guarded", headers=auth)
        assert r.status_code == 200 and json.loads(r.json()["claims"])["role"] == "anon", r.text

        def refused() -> httpx.Response | None:
            sent = time.time()
            r = client.get("/functions/v1/guarded", headers=auth)
            if r.status_code == 200:
                assert sent < exp, "served once expired"
                return None
            return r

        r = wait_until(refused, 10, what="the expired token to be refused")
        assert (r.status_code, r.content) == (401, b'{"msg":"Invalid JWT"}')
        good = client.get("/functions/v1/guarded", headers={"authorization": f"Bearer {ANON}"})
        assert good.status_code == 200, good.text


@pytest.mark.timeout(120)
def test_many_lent_connections_at_once_each_get_their_own_answers(srv: Served) -> None:
    failures: list[str] = []

    def one(t: int) -> None:
        try:
            with lent_client(srv) as (client, _port):
                for i in range(15):
                    n = f"{t}-{i}"
                    r = client.get(
                        "/functions/v1/hello", params={"n": n}, headers={"x-request-id": f"id-{n}"}
                    )
                    if r.status_code != 200 or r.json()["n"] != n or r.headers["x-request-id"] != f"id-{n}":
                        failures.append(f"{n}: {r.status_code} {r.headers} {r.text[:200]}")
        except Exception as exc:
            failures.append(f"client {t}: {exc!r}")

    threads = [threading.Thread(target=one, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    events = wait_until(
        lambda: (
            len(found := [e for e in srv.events(kind="request") if e["request"].startswith("id-")]) >= 120
            and found
        ),
        10,
        what="120 request events",
    )
    assert sorted(e["request"] for e in events) == sorted(f"id-{t}-{i}" for t in range(8) for i in range(15))


@pytest.mark.timeout(90)
def test_a_cpu_limit_after_a_lent_response_started_closes_the_connection(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    config = (root / "supabase" / "config.toml").read_text()
    config = config.replace(
        "graceful_exit_timeout_sec = 2\n",
        "graceful_exit_timeout_sec = 1\ncpu_time_soft_limit_ms = 1500\ncpu_time_hard_limit_ms = 2000\n",
    )
    (root / "supabase" / "config.toml").write_text(config)
    with Served(root, verify_jwt=True) as srv:
        with lent_client(srv) as (client, _port):
            received = b""
            with (
                pytest.raises(httpx.HTTPError),
                client.stream("GET", "/functions/v1/hello", params={"do": "streamspin"}) as r,
            ):
                assert r.status_code == 200
                for chunk in r.iter_raw():
                    received += chunk
            assert received == b"first\n", received  # nothing of an error answer mixed into the body
        srv.wait_event(kind="shutdown", function="hello", reason="cpu", timeout=20)
        assert fresh(srv, "GET", "/functions/v1/hello").status_code == 200


def any_holder(srv: Served, port: int) -> set[int]:
    """Pids of serve and its descendants holding a TCP socket connected to the client's `port`."""
    found: set[int] = set()
    for proc in srv.family():
        try:
            conns = (
                proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
            )
        except psutil.Error:
            continue
        if any(c.raddr and c.raddr.port == port for c in conns):
            found.add(proc.pid)
    return found


@pytest.mark.timeout(90)
def test_a_lent_connection_the_client_closes_leaves_no_socket_behind(srv: Served) -> None:
    ports: list[int] = []
    for _ in range(10):
        with lent_client(srv) as (client, port):
            assert client.get("/functions/v1/hello").status_code == 200
            ports.append(port)
    wait_until(
        lambda: not [p for p in ports if any_holder(srv, p)],
        10,
        what="every lent connection's socket closed in serve and its worker",
    )
    assert fresh(srv, "GET", "/functions/v1/hello").status_code == 200


@pytest.mark.timeout(90)
def test_an_edit_while_a_lent_request_runs_lets_it_finish_then_serves_the_new_code(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    with Served(root, verify_jwt=True) as srv, lent_client(srv) as (client, _port):
        done: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: done.append(
                client.get("/functions/v1/hello", params={"do": "sleep", "s": "2", "tag": "edit"})
            )
        )
        slow.start()
        srv.wait_event(lambda e: "sleeping edit" in e["message"], kind="log")
        replace_function(root, "hello", probe("hello-v2"))
        srv.wait_event(lambda e: "hello" in e["message"], kind="reload", timeout=20)
        slow.join(30)
        assert done and done[0].status_code == 200, done and done[0].text
        assert done[0].json()["name"] == "hello"  # the old code finished its request
        r = client.get("/functions/v1/hello")
        assert (r.status_code, r.json()["name"]) == (200, "hello-v2"), r.text


@pytest.mark.timeout(90)
def test_max_body_mb_on_a_lent_connection_is_as_through_serve(srv: Served) -> None:
    sizes = [0, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]
    expected = {n: shape(fresh(srv, "POST", "/functions/v1/small", content=b"z" * n)) for n in sizes}
    assert expected[1000][0] == 200 and expected[3 << 20][0] == 413, expected
    with lent_client(srv, "small") as (client, _port):
        for n in sizes:
            r = client.post("/functions/v1/small", content=b"z" * n)
            assert shape(r) == expected[n], n
            again = client.get("/functions/v1/small")
            assert again.status_code == 200, (n, again.text)
            again = client.get("/functions/v1/small")
            wait_lent(srv, client_port(again))


@pytest.mark.timeout(90)
def test_a_worker_dying_under_a_lent_request_is_a_500_as_through_serve(srv: Served) -> None:
    expected = fresh(srv, "GET", "/functions/v1/hello", params={"do": "exit"})
    assert expected.status_code == 500 and expected.json()["code"] == "WORKER_ERROR", expected.text
    wait_until(lambda: fresh(srv, "GET", "/functions/v1/hello").status_code == 200, 20, what="a new worker")
    with lent_client(srv) as (client, _port):
        r = client.get("/functions/v1/hello", params={"do": "exit"})
        assert shape(r) == shape(expected)
    with keep_alive(srv) as client:
        r = wait_until(
            lambda: (r := client.get("/functions/v1/hello")).status_code == 200 and r, 20, what="200"
        )
        assert r.json()["name"] == "hello"
    events = [e["status"] for e in srv.events(kind="request") if e["path"] == "/functions/v1/hello"]
    assert events.count(500) == 2, events


@pytest.mark.timeout(90)
def test_lent_requests_are_printed_in_the_terminal_once_each(tmp_path: Path) -> None:
    with Served(lending_project(tmp_path), verify_jwt=True, json_output=False) as srv:
        with lent_client(srv) as (client, port):
            for n in range(6):
                assert client.get("/functions/v1/hello", params={"n": str(n)}).status_code == 200
            assert holders(srv, port)

        def printed() -> list[str]:
            return [line for line in srv.output().splitlines() if "GET /functions/v1/hello → 200" in line]

        lines = wait_until(lambda: len(printed()) >= 8 and printed(), 10, what="8 request lines")
        assert len(lines) == 8, lines


@pytest.mark.timeout(90)
def test_a_request_while_the_last_handler_runs_on_is_answered_though_its_worker_dies(srv: Served) -> None:
    with lent_client(srv) as (client, _port):
        after = client.get("/functions/v1/hello", params={"do": "after", "s": "1"})
        assert after.status_code == 200, after.text
        result: dict[str, Any] = {}

        def second() -> None:
            try:
                params = {"do": "sleep", "s": "20", "tag": "2nd"}
                result["r"] = client.get("/functions/v1/hello", params=params)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=second)
        thread.start()
        srv.wait_event(lambda e: "sleeping 2nd" in e["message"], kind="log")
        # The first handler ends while the second request runs on the same connection...
        srv.wait_event(lambda e: e["request"] == after.headers["x-request-id"], kind="request")
        os.kill(after.json()["pid"], signal.SIGKILL)  # ...then its worker dies under the second
        thread.join(40)
        assert "r" in result, result
        r = result["r"]
        assert r.status_code == 500 and r.json()["code"] == "WORKER_ERROR", r.text


@pytest.mark.timeout(90)
def test_workers_forked_from_one_fork_server_make_request_ids_of_their_own(srv: Served) -> None:
    ids = []
    for name in ("hello", "other"):
        with lent_client(srv, name) as (client, port):
            r = client.get(f"/functions/v1/{name}")
            assert r.status_code == 200 and holders(srv, port), r.text
            ids.append(r.headers["x-request-id"])
    assert ids[0] != ids[1], ids


def lent_socket(srv: Served, name: str, requests: int = 2) -> tuple[socket.socket, Any, int]:
    """A raw connection lent to `name`'s worker after `requests` requests, its reader and the worker's
    pid."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    stream = sock.makefile("rb")
    for _ in range(requests):
        sock.sendall(get_bytes(f"/functions/v1/{name}"))
        answer = read_response(stream)
        assert answer is not None and answer[0] == 200, answer
    wait_lent(srv, sock.getsockname()[1])
    return sock, stream, int(json.loads(answer[2])["pid"])


@pytest.mark.timeout(90)
def test_a_lent_504_is_the_only_answer_though_the_worker_dies_after_it(srv: Served) -> None:
    sock, stream, pid = lent_socket(srv, "small")
    with sock, stream:
        sock.sendall(get_bytes("/functions/v1/small?do=sleep&s=30&tag=late"))
        answer = read_response(stream)
        assert answer is not None and answer[0] == 504, answer
        rid = answer[1]["x-request-id"]
        event = srv.wait_event(lambda e: e["request"] == rid, kind="request")  # recorded when answered
        assert event["status"] == 504, event
        os.kill(pid, signal.SIGKILL)
        assert read_response(stream) is None  # the connection ends; no second answer
    assert [e["status"] for e in srv.events(kind="request") if e["request"] == rid] == [504]


@pytest.mark.timeout(90)
def test_a_stalled_body_on_a_lent_connection_is_a_408_that_closes_it_as_through_serve(srv: Served) -> None:
    head = b"POST /functions/v1/small HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b"x" * 10
    answers = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as fresh_sock:
        fresh_sock.sendall(head)
        fresh_stream = fresh_sock.makefile("rb")
        answers.append(read_response(fresh_stream))
        assert read_response(fresh_stream) is None
    sock, stream, _pid = lent_socket(srv, "small")
    with sock, stream:
        sock.sendall(head)
        answers.append(read_response(stream))
        assert read_response(stream) is None
    expected, lent = answers
    assert expected is not None and lent is not None
    assert (expected[0], json.loads(expected[2])["code"]) == (408, "REQUEST_TIMEOUT"), expected
    assert (lent[0], lent[2], lent[1].get("connection")) == (expected[0], expected[2], "close"), lent


@pytest.mark.timeout(90)
def test_an_idle_lent_connection_is_closed_after_the_keep_alive_timeout(srv: Served) -> None:
    sock, stream, _pid = lent_socket(srv, "hello", requests=1)  # lent, and no response from the worker yet
    with sock, stream:
        began = time.monotonic()
        assert read_response(stream) is None  # uvicorn's 5 s, not the 30 s head timeout
        assert time.monotonic() - began < 15


@pytest.mark.timeout(90)
def test_a_large_lent_response_arrives_whole_though_its_worker_retires_under_it(tmp_path: Path) -> None:
    root = lending_project(tmp_path)
    with Served(root, verify_jwt=True) as srv:
        sock, stream, pid = lent_socket(srv, "hello")
        with sock, stream:
            sock.sendall(get_bytes("/functions/v1/hello?do=big&mb=32"))  # more than the socket buffers
            wait_until(lambda: sock.recv(1, socket.MSG_PEEK), 10, what="the response to begin")
            replace_function(root, "hello", probe("hello-v2"))  # the worker retires, the response unread
            wait_until(
                lambda: fresh(srv, "GET", "/functions/v1/hello").json()["name"] == "hello-v2",
                20,
                what="the new code",
            )
            answer = read_response(stream)
            assert answer is not None and answer[0] == 200, answer
            assert len(answer[2]) == 32 << 20
            wait_until(lambda: not psutil.pid_exists(pid), 15, what="the old worker to leave")


@pytest.mark.timeout(90)
def test_a_request_read_with_the_tail_of_an_unread_body_is_never_lost(srv: Served) -> None:
    sock, stream, _pid = lent_socket(srv, "hello")
    with sock, stream:
        head = b"POST /functions/v1/hello?do=after&s=0 HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n"
        sock.sendall(head)  # answered before its body is read
        answer = read_response(stream)
        assert answer is not None and answer[0] == 200, answer
        srv.wait_event(lambda e: e["request"] == answer[1]["x-request-id"], kind="request")
        # The body's end and a request the worker gives back, in one write: the worker cannot hand back
        # what it read of that request, so it ends the connection rather than lose it.
        sock.sendall(b"x" * 100 + get_bytes("/functions/v1/other"))
        after = read_response(stream)
        assert after is None or (after[0], json.loads(after[2])["name"]) == (200, "other"), after


@pytest.mark.timeout(90)
def test_a_lent_response_in_flight_when_serve_stops_says_connection_close(tmp_path: Path) -> None:
    srv = serving(tmp_path).start()
    try:
        sock, stream, _pid = lent_socket(srv, "hello")
        with sock, stream:
            sock.sendall(get_bytes("/functions/v1/hello?do=sleep&s=1&tag=stopping"))
            srv.wait_event(lambda e: "sleeping stopping" in e["message"], kind="log")
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            answer = read_response(stream)
            assert answer is not None and answer[0] == 200, answer
            assert answer[1].get("connection") == "close", answer[1]  # as uvicorn's when it stops
            assert read_response(stream) is None
        assert srv.stop(signal.SIGTERM, timeout=30) == 0, srv.output()[-3000:]
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill_all()


@pytest.mark.timeout(90)
def test_a_next_request_begun_in_the_read_that_ended_the_last_is_not_lost_to_lending(srv: Served) -> None:
    """Serve lends a connection when a response ends, if nothing of a next request has been read: here
    its first bytes came with the last request, so serve keeps the connection and answers it whole."""
    for round_ in range(3):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        with sock, sock.makefile("rb") as stream:
            sock.sendall(get_bytes("/functions/v1/hello?n=1") + b"GE")
            first = read_response(stream)
            assert first is not None and first[0] == 200, first
            sock.sendall(b"T /functions/v1/hello?n=2 HTTP/1.1\r\nhost: x\r\n\r\n")
            second = read_response(stream)
            assert second is not None, f"round {round_}: no answer to the second request"
            assert second[0] == 200 and json.loads(second[2])["n"] == "2", (round_, second)


@pytest.mark.timeout(90)
def test_a_request_sent_while_a_lent_response_streams_is_answered_after_it(srv: Served) -> None:
    """A client that pipelines (its next request in a write of its own, the last response still coming)
    gets both answers in order on the one connection, as from bare uvicorn: the worker's own request,
    and then one for another function, which goes back to serve whole."""
    sock, stream, _pid = lent_socket(srv, "hello")
    with sock, stream:
        for n, name in enumerate(("hello", "other")):
            sock.sendall(get_bytes("/functions/v1/hello?do=stream"))
            assert int(stream.readline().split()[1]) == 200
            while stream.readline() != b"\r\n":  # the head
                pass
            size = int(stream.readline(), 16)
            assert stream.read(size + 2) == b"chunk 0\n\r\n"  # the response is under way
            sock.sendall(get_bytes(f"/functions/v1/{name}?n={n}"))
            rest = b""
            while size := int(stream.readline(), 16):
                rest += stream.read(size + 2)
            stream.readline()
            assert rest.count(b"chunk") == 4, rest
            answer = read_response(stream)
            assert answer is not None, f"round {n}: the request sent during the stream got no answer"
            body = json.loads(answer[2])
            assert (answer[0], body["name"], body["n"]) == (200, name, str(n)), answer
