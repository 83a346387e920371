"""In-process: a worker's lending socket, as serve writes to it (edgecli/runtime/lent.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from edgecli import ipc
from edgecli.ipc import Kind
from edgecli.runtime.lent import Lending

pytestmark = pytest.mark.timeout(10)


class FakeHost:
    def __init__(self) -> None:
        self.spec = SimpleNamespace(function="f", worker="f-1")
        self.app: Any = None
        self.lifespan: Any = None
        self.stopping = False
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def flush(self) -> None:
        pass

    def background(self, coro: Any) -> None:
        coro.close()


OFFER = {"channel": 5, "verify": False, "max_body": 0, "idle": 0, "head_timeout": 0}


@contextlib.asynccontextmanager
async def lent_to(app: Any) -> AsyncIterator[tuple[FakeHost, Lending, socket.socket]]:
    """A worker's lending, serving `app`, lent a real connection on channel 5 as serve lends one: the
    host (the frames it wrote), the lending, and the client's end of the connection."""
    loop = asyncio.get_running_loop()
    serve_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client, lent = socket.socketpair()
    with serve_end, worker_end, client, lent:
        host = FakeHost()
        host.app = app
        tasks: list[asyncio.Task[Any]] = []
        host.background = lambda coro: tasks.append(loop.create_task(coro))  # type: ignore[method-assign]
        lending = Lending(host, worker_end)
        ipc.send_lend(serve_end, OFFER, lent.fileno())
        lending.sock.setblocking(False)
        lending._readable()
        await asyncio.gather(*tasks)
        client.setblocking(False)
        try:
            yield host, lending, client
        finally:
            lending._headers_timer.cancel()  # type: ignore[union-attr]


def test_a_lend_whose_fd_did_not_come_is_given_back_at_once() -> None:
    """Serve keeps its copy of the connection and serves it itself, rather than wait for a worker that
    has nothing to serve it with (this process ran out of descriptors)."""

    async def main() -> None:
        serve_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with serve_end, worker_end:
            host = FakeHost()
            lending = Lending(host, worker_end)
            serve_end.send(ipc.dumps(OFFER))  # the message alone, no SCM_RIGHTS
            lending.sock.setblocking(False)
            lending._readable()
            assert host.frames == [ipc.pack(Kind.RELEASED, 5)]
            assert lending.connections == {}

    asyncio.run(main())


def test_a_lent_request_s_end_is_packed_for_serve_to_record() -> None:
    """The worker tells serve a request began (LENT_BUSY), its response started, and how it ended
    (LENT_ENDED: status, duration, the busy payload again): serve makes the `request` event from these,
    so the worker sends no event of its own for it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with lent_to(app) as (host, lending, client):
            await loop.sock_sendall(client, b"GET /functions/v1/f/a%20b?q=1 HTTP/1.1\r\nhost: x\r\n\r\n")
            response = b""
            while not response.endswith(b"0\r\n\r\n"):  # its body chunked, as uvicorn sends it
                response += await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
            assert response.startswith(b"HTTP/1.1 201 ")
            deadline = loop.time() + 5
            while len(host.frames) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            frames = ipc.FrameParser().feed(b"".join(host.frames))
            assert [(kind, channel) for kind, _, channel, _ in frames] == [
                (Kind.LENT_BUSY, 5),
                (Kind.LENT_STARTED, 5),
                (Kind.LENT_ENDED, 5),
            ]
            busy = frames[0][3]
            request_id, method, path = ipc.read_busy(busy)
            assert (method, path) == ("GET", "/functions/v1/f/a b")
            assert f"x-request-id: {request_id}".encode() in response
            status, duration_ms, ended_busy = ipc.read_ended(frames[2][3])
            assert (status, ended_busy) == (201, busy)
            assert 0 <= duration_ms < 5000
            for connection in list(lending.connections.values()):
                connection.transport.close()

    asyncio.run(main())


@pytest.mark.parametrize("split", ["head over two reads", "body into the next request's read"])
def test_a_request_pipelined_in_the_read_a_served_one_ends_in_is_served_after_it(split: str) -> None:
    """The worker stops parsing at the next request, and reads it once the served one's answer is out:
    where it begins is found from where the served request began, its head and its content-length,
    however its bytes were split into reads."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = f"{scope['query_string'].decode()} {size}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(answer))],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    first = b"POST /functions/v1/f?n=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 300\r\n\r\n" + b"a" * 300
    second = b"GET /functions/v1/f?n=2 HTTP/1.1\r\nhost: x\r\n\r\n"
    cut = 20 if split == "head over two reads" else len(first) - 100

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with lent_to(app) as (_, lending, client):
            deadline = loop.time() + 5
            await loop.sock_sendall(client, first[:cut])
            protocol = lending.connections[5]
            while protocol.fed < cut and loop.time() < deadline:  # read on its own, not with the rest
                await asyncio.sleep(0.01)
            await loop.sock_sendall(client, first[cut:] + second)
            response = b""
            while response.count(b"HTTP/1.1 200") < 2 and loop.time() < deadline:
                response += await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
            assert response.endswith(b"n=2 0"), response
            assert b"n=1 300" in response, response
            assert not protocol.transport.is_closing()
            protocol.transport.close()

    asyncio.run(main())


def test_a_request_in_the_read_an_unread_body_ends_in_goes_back_to_serve_whole() -> None:
    """The handler answered before the body came; the worker drops the body as it reads it, and what
    follows it in the same read (another function's request) goes back to serve, from its first byte."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    other = b"GET /functions/v1/g?n=2 HTTP/1.1\r\nhost: x\r\n\r\n"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with lent_to(app) as (host, _, client):
            await loop.sock_sendall(
                client, b"POST /functions/v1/f HTTP/1.1\r\nhost: x\r\ncontent-length: 300\r\n\r\n"
            )
            answer = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
            assert answer.startswith(b"HTTP/1.1 404 "), answer
            await loop.sock_sendall(client, b"a" * 300 + other)
            deadline = loop.time() + 5
            released: list[bytes] = []
            while not released and loop.time() < deadline:
                await asyncio.sleep(0.01)
                frames = ipc.FrameParser().feed(b"".join(host.frames))
                released = [payload for kind, _, _, payload in frames if kind == Kind.RELEASED]
            assert released == [other]

    asyncio.run(main())
