"""One request or WebSocket relayed to one worker: its channel, the pumps beside it, and how it ends.

The relay picks the worker; an `Exchange` then carries the request over the worker's channel and the
response back, as the wire protocol's flow control allows (ipc.py). It is also where a request stops
waiting for its worker: the client left (499), the response did not start within
`request_idle_timeout_sec` (504 IDLE_TIMEOUT), the body went over `max_body_mb` (413) or stalled (408).
In each case the worker hears DISCONNECT, and the slot is freed when the exchange closes, whatever the
worker does next. A WebSocket's exchange is `SocketExchange` (edgecli/host/websocket.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edgecli import ipc
from edgecli.answers import (
    JSON,
    REQUEST_ID,
    Receive,
    Scope,
    Send,
    json_body,
    plain,
    too_large,
    worker_failed,
)
from edgecli.host.connection import LOST
from edgecli.http_protocol import on_client_gone
from edgecli.idle_watch import IdleWatch

if TYPE_CHECKING:
    from edgecli.config import Limits
    from edgecli.host.worker import Worker

CLIENT_CLOSED = 499  # nginx's status for "client closed the request", as Supabase records it
MB = 1024 * 1024


class Cut:
    """A marker the exchange puts on its own stream: why it stops waiting for the worker."""

    def __init__(self, why: str) -> None:
        self.why = why


CLIENT_GONE = Cut("the client left")
IDLE = Cut("no response within request_idle_timeout_sec")
TOO_LARGE = Cut("the body went over max_body_mb")
BODY_TIMEOUT = Cut("the body stalled")


class WorkerGone(Exception):
    """The worker went away after the response started: the connection is aborted."""


class Exchange:
    __slots__ = (
        "body_pending",
        "channel",
        "conn",
        "idle_watch",
        "limits",
        "pump",
        "receive",
        "request_id",
        "scope",
        "send",
        "stream",
        "worker",
    )

    def __init__(
        self,
        idle_watch: IdleWatch[Exchange],
        worker: Worker,
        limits: Limits,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
    ) -> None:
        self.idle_watch = idle_watch
        self.worker = worker
        # What carries the request's messages once it is open (flow control, body, disconnect). The
        # worker's own state (what is in flight, why it failed) is reached through its verbs only.
        self.conn = worker.conn
        self.limits = limits
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = request_id
        self.channel = 0
        self.stream: Any = None
        self.pump: asyncio.Future[None] | None = None
        self.body_pending = False  # the client has not sent the whole request body yet

    def open(self, inner: Scope, first_body: bytes | None, more: bool) -> None:
        payload = ipc.encode_scope(inner, self.request_id)
        self.channel, self.stream = self.worker.open_request(payload, first_body, more, self.request_id)

    def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.channel:
            self.worker.close_request(self.channel)

    def cut(self, marker: Cut) -> None:
        self.conn.disconnect(self.channel)
        self.stream.put(marker)

    def idle(self) -> None:
        # A worker waiting for a body that does not come is the client's stall, not the function's.
        self.cut(BODY_TIMEOUT if self.body_pending else IDLE)

    async def first_item(self) -> Any:
        """The worker's first answer; IDLE if it takes longer than request_idle_timeout_sec."""
        idle = self.limits.request_idle_timeout_sec
        if not idle:
            return await self.stream.get()
        watch = self.idle_watch
        watch.add(self, idle)
        try:
            return await self.stream.get()
        finally:
            watch.remove(self)

    # -- HTTP ------------------------------------------------------------------------------------------

    async def http(self, inner: Scope, first: dict[str, Any] | None) -> int:
        """`first`: the first body message, or None when the body waits for the app (100-continue)."""
        more = True if first is None else bool(first.get("more_body", False))
        body = None if first is None else first.get("body", b"")
        self.open(inner, body, more)
        # With the whole body in, only the client leaving remains to be noticed: serve's own HTTP
        # protocol says so itself, which costs less than a task per request waiting in receive().
        if more or not on_client_gone(self.receive, self.client_gone):
            self.pump = asyncio.ensure_future(self.pump_body(more, first is None, len(body or b"")))
        return await self.respond()

    def client_gone(self) -> None:
        if self.channel:
            self.cut(CLIENT_GONE)

    async def pump_body(self, more: bool, expects: bool, received: int) -> None:
        """Request body → worker as it has room; then watch for the client going away."""
        limit = self.limits.max_body_mb * MB
        stall = self.limits.request_idle_timeout_sec or None
        if expects:
            await self.conn.wait_for_credit(self.channel)  # the app asked for the body
        self.body_pending = more
        while True:
            try:
                message = await (asyncio.wait_for(self.receive(), stall) if more else self.receive())
            except TimeoutError:
                self.cut(BODY_TIMEOUT)
                return
            if message["type"] == "http.disconnect":
                self.cut(CLIENT_GONE)
                return
            if more:
                body = message.get("body", b"")
                received += len(body)
                if limit and received > limit:
                    self.cut(TOO_LARGE)
                    return
                more = self.body_pending = bool(message.get("more_body", False))
                await self.conn.send_body(self.channel, body, more)

    async def respond(self) -> int:
        item = await self.first_item()
        if not isinstance(item, tuple) or item[0] != "start":
            return await self.refuse(item)
        _, status, headers = item
        headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID]
        headers.append((REQUEST_ID, self.request_id.encode("latin-1")))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        while True:
            item = await self.stream.get()
            if item is CLIENT_GONE:
                return CLIENT_CLOSED
            if not isinstance(item, tuple) or item[0] != "body":
                raise WorkerGone(self.worker.id)  # uvicorn aborts the connection: the body is incomplete
            _, body, more = item
            await self.send({"type": "http.response.body", "body": body, "more_body": more})
            if not more:
                return int(status)
            self.conn.consumed(self.channel, len(body))

    async def refuse(self, item: Any) -> int:
        """The response did not start: answer for the worker."""
        scope, send, request_id = self.scope, self.send, self.request_id
        if item is CLIENT_GONE:
            return CLIENT_CLOSED
        if item is TOO_LARGE:
            return await too_large(scope, send, request_id, self.limits.max_body_mb)
        if item is IDLE:
            idle = self.limits.request_idle_timeout_sec
            body = json_body("IDLE_TIMEOUT", f"The function did not start a response within {idle:g} s")
            return await plain(scope, send, 504, body, request_id, JSON, "IDLE_TIMEOUT")
        if item is BODY_TIMEOUT:
            body = json_body("REQUEST_TIMEOUT", "The client stopped sending the request body")
            return await plain(scope, send, 408, body, request_id, JSON, "REQUEST_TIMEOUT", close=True)
        kill_reason, deadline = self.worker.why_failed()
        return await worker_failed(item is LOST, kill_reason, deadline, scope, send, request_id)
