"""One request or WebSocket in flight on a worker: its state, and an HTTP request's receive() and send()
(a WebSocket's are in runtime/websocket.py).

The worker owns the socket and the table of channels; this module turns ASGI messages into frames on
one channel and back, with the wire's flow control (docs/architecture.md, "The wire protocol").
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from edgecli import ipc
from edgecli.ipc import MORE, Kind

DISCONNECT = object()  # put in a channel's inbox: the client is gone, or the response is complete


class Outbox(Protocol):
    """What a channel writes through: the worker's socket."""

    def write(self, frame: bytes) -> None: ...

    def write_last(self, frame: bytes) -> None: ...

    async def drain(self) -> None: ...


class Channel:
    """One request or WebSocket in flight on this worker, as the app's receive() and send() see it."""

    __slots__ = (
        "accepted",
        "close_code",
        "complete",
        "connected",
        "credit",
        "disconnected",
        "inbox",
        "pending_start",
        "started",
        "task",
        "waiting",
    )

    def __init__(self) -> None:
        self.inbox = ipc.Inbox()  # bounded by the host's credit (ipc.WINDOW)
        self.credit = ipc.Credit()  # response bytes out that the host has not yet passed on
        self.started = False  # http.response.start sent / websocket accepted or closed
        self.complete = False  # the last body message was sent
        self.pending_start: bytes | None = None
        self.disconnected = False
        self.connected = False  # websocket.connect handed to the app
        self.accepted = False
        self.close_code = 1005
        self.task: asyncio.Task[None] | None = None
        self.waiting = False  # the app is in receive()

    def disconnect(self) -> None:
        self.disconnected = True
        self.credit.close()
        self.inbox.put(DISCONNECT)


def http_io(out: Outbox, channel: int, chan: Channel, scope: dict[str, Any]) -> tuple[Any, Any]:
    """The app's receive() and send() for one HTTP request, with the wire's flow control."""
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            # A client that expects 100-continue is told to send its body when the app first asks
            # for it (as uvicorn does): the host sends none until this side grants it credit.
            if any(k == b"expect" and v.lower() == b"100-continue" for k, v in scope["headers"]):
                out.write(ipc.pack_count(Kind.CREDIT, channel, ipc.WINDOW))
        if not (chan.disconnected or chan.complete):
            chan.waiting = True
            try:
                item = await chan.inbox.get()
            finally:
                chan.waiting = False
            if item is not DISCONNECT:
                body, flags = item
                if flags & MORE:  # the last piece needs no credit: nothing follows it
                    out.write(ipc.pack_count(Kind.CREDIT, channel, len(body)))
                return {"type": "http.request", "body": body, "more_body": bool(flags & MORE)}
        chan.inbox.put(DISCONNECT)  # every later receive() also sees the disconnect
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            # Held back and written with the first body piece: one write, one syscall.
            chan.pending_start = ipc.start_frame(channel, message)
            chan.started = True
        elif kind == "http.response.body" and not chan.disconnected:
            await send_body(out, channel, chan, message)

    return receive, send


async def send_body(out: Outbox, channel: int, chan: Channel, message: Any) -> None:
    more = bool(message.get("more_body", False))
    body = bytes(message.get("body", b""))
    if not more and len(body) <= ipc.PIECE:  # the usual small response: one frame, no flow control
        finish_body(out, channel, chan, ipc.pack(Kind.RESPONSE, channel, body))
        return
    for part, rest in ipc.pieces(body):
        part_more = more or rest
        frame = ipc.pack(Kind.RESPONSE, channel, part, MORE if part_more else 0)
        if chan.pending_start is not None:
            frame, chan.pending_start = chan.pending_start + frame, None
        if not part_more:
            finish_body(out, channel, chan, frame)
            return
        chan.credit.sent(len(part))
        out.write(frame)
        await out.drain()
        await chan.credit.wait()
        if chan.disconnected:
            return


def finish_body(out: Outbox, channel: int, chan: Channel, frame: bytes) -> None:
    if chan.pending_start is not None:
        frame, chan.pending_start = chan.pending_start + frame, None
    chan.complete = True
    out.write_last(frame)
    if chan.waiting:
        chan.inbox.put(DISCONNECT)  # the receive() waiting now learns the response is done
