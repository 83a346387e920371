"""The relay: the ASGI app uvicorn serves. Routing, auth, x-request-id, proxying, error mapping.

`/functions/v1/<name>[/<path>]` goes to a worker of <name> as `/<name>[/<path>]`; request and response
bodies stream both ways over the worker's socket. Whatever goes wrong maps to the status codes Supabase
returns, and every response carries `x-request-id`. See docs/architecture.md, "The life of a request".
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from edgecli.events import Event
from edgecli.host.auth import CLAIMS_HEADER, AuthFailure, Verifier, claims_header
from edgecli.host.connection import LOST, BootError
from edgecli.host.pool import NoWorkerAvailable, Pool
from edgecli.host.worker import RequestStream, Worker

PREFIX = "/functions/v1/"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
REQUEST_ID = b"x-request-id"
CLAIMS = CLAIMS_HEADER.encode()

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class WorkerGone(Exception):
    """The worker went away after the response started: the connection is aborted."""


def _json_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


# Request ids are uuid4-shaped but drawn from a seeded PRNG: uuid.uuid4() reads the kernel's random source
# and builds a UUID object per call, ~4 µs on the relay's hottest path; ids are labels, not secrets.
_random_bits = random.Random(os.urandom(16)).getrandbits
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (0x4 << 76)


def new_request_id() -> str:
    h = f"{_random_bits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Relay:
    def __init__(
        self,
        pools: Mapping[str, Pool],
        verifier: Verifier,
        emit: Callable[[Event], None],
        verify_jwt: bool = True,
        health: tuple[str, Callable[[], tuple[int, bytes]]] | None = None,
    ) -> None:
        self.pools = pools
        self.verifier = verifier
        self.emit = emit
        self.verify_jwt = verify_jwt
        self.health = health  # (path, answer) under `serve --prod`: see edgecli/host/health.py

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = self.request_id(scope)
        if self.health is not None and scope["path"] == self.health[0]:
            status, body = self.health[1]()
            await self.plain(send, status, body, request_id, "application/json")
            return
        name, subpath = self.route(scope["path"])
        pool = self.pools.get(name) if name else None
        status, worker = 500, None
        try:
            if pool is None:
                status = await self.plain(send, 404, b"Function not found", request_id)
            else:
                status, worker = await self.dispatch(pool, scope, receive, send, request_id, name, subpath)
        finally:
            self.log_request(scope, name if pool else None, worker, request_id, status, started)

    # -- routing ---------------------------------------------------------------------------------------

    @staticmethod
    def route(path: str) -> tuple[str, str]:
        if not path.startswith(PREFIX):
            return "", ""
        name, slash, rest = path[len(PREFIX) :].partition("/")
        if not NAME.match(name):
            return "", ""
        return name, slash + rest

    @classmethod
    def request_id(cls, scope: Scope) -> str:
        """The client's own x-request-id when it sent a non-empty one, else a new one."""
        return cls.header(scope["headers"], REQUEST_ID) or new_request_id()

    # -- one request -----------------------------------------------------------------------------------

    async def dispatch(
        self, pool: Pool, scope: Scope, receive: Receive, send: Send, request_id: str, name: str, subpath: str
    ) -> tuple[int, Worker | None]:
        # A client's own claims header never reaches the function, verified or not: functions trust it.
        headers = [(k, v) for k, v in scope["headers"] if k != CLAIMS]
        if self.verify_jwt and pool.function.verify_jwt and scope["method"] != "OPTIONS":
            try:
                claims = self.verifier.verify(self.header(headers, b"authorization"))
            except AuthFailure as exc:
                return await self.plain(send, exc.status, exc.body, request_id, "application/json"), None
            headers.append((CLAIMS, claims_header(claims)))
        first = await receive()
        if first["type"] == "http.disconnect":
            return 499, None
        try:
            worker = await pool.acquire()
        except BootError as exc:
            body = _json_body("BOOT_ERROR", f"Function failed to boot: {exc.message}")
            return await self.plain(send, 503, body, request_id, "application/json"), None
        except NoWorkerAvailable:
            body = _json_body("WORKER_TIMEOUT", "No worker became available within request_wait_timeout_ms")
            return await self.plain(send, 504, body, request_id, "application/json"), None
        inner = dict(scope, path=f"/{name}{subpath}", raw_path=f"/{name}{subpath}".encode(), headers=headers)
        more = first.get("more_body", False)
        pump: asyncio.Future[None] | None = None
        try:
            with worker.request(inner, request_id, first.get("body", b""), more) as stream:

                def watch() -> None:
                    # Only a streamed request or response needs a task beside the response loop: to pump
                    # the body, and to tell the worker when the client goes away. Plain requests skip it.
                    nonlocal pump
                    if pump is None:
                        pump = asyncio.ensure_future(self.pump(receive, stream, more))

                if more:
                    watch()
                try:
                    return await self.respond(worker, stream, send, request_id, watch), worker
                finally:
                    if pump is not None:
                        pump.cancel()
        finally:
            pool.release(worker)

    async def pump(self, receive: Receive, stream: RequestStream, more: bool) -> None:
        """Request body → worker, with back-pressure; then watch for the client going away."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.disconnect()
                return
            if more:
                more = message.get("more_body", False)
                await stream.send_body(message.get("body", b""), more)

    async def respond(
        self, worker: Worker, stream: RequestStream, send: Send, request_id: str, watch: Callable[[], None]
    ) -> int:
        item = await stream.get()
        if item is LOST or item[0] == "failed":
            return await self.worker_failed(stream, item, send, request_id)
        _, status, headers = item
        headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID]
        headers.append((REQUEST_ID, request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        while True:
            item = await stream.get()
            if item is LOST or item[0] == "failed":
                raise WorkerGone(worker.id)  # uvicorn aborts the connection: the body is incomplete
            if item[0] == "body":
                if item[2]:
                    watch()  # a streamed response: notice if the client leaves mid-stream
                await send({"type": "http.response.body", "body": item[1], "more_body": item[2]})
                if not item[2]:
                    return int(status)

    async def worker_failed(self, stream: RequestStream, item: Any, send: Send, request_id: str) -> int:
        reason = stream.limit
        if item is LOST and reason is not None:
            limit = {"wall_clock": "wall clock", "cpu": "CPU time", "memory": "memory"}[reason]
            body = _json_body("WORKER_LIMIT", f"Worker was terminated: {limit} limit reached")
            return await self.plain(send, 546, body, request_id, "application/json")
        message = "the worker exited before sending a response" if item is LOST else item[1]
        if stream.cut_by is not None:
            message = f"{message} (serve's {stream.cut_by} deadline, graceful_exit_timeout_sec, cut it off)"
        body = _json_body("WORKER_ERROR", f"Function exited with an error: {message}")
        return await self.plain(send, 500, body, request_id, "application/json")

    # -- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
        for key, value in headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @staticmethod
    async def plain(
        send: Send, status: int, body: bytes, request_id: str, content_type: str = "text/plain; charset=utf-8"
    ) -> int:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID, request_id.encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status

    def log_request(
        self,
        scope: Scope,
        function: str | None,
        worker: Worker | None,
        request_id: str,
        status: int,
        started: float,
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        level = "error" if status >= 500 else "warning" if status >= 400 else "info"
        method, path = scope["method"], scope["path"]
        self.emit(
            Event(
                kind="request",
                message=f"{method} {path} {status} {duration_ms} ms",
                level=level,
                function=function,
                worker=worker.id if worker else None,
                request=request_id,
                fields={"method": method, "path": path, "status": status, "duration_ms": duration_ms},
            )
        )
