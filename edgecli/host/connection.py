"""The host's end of one worker socket: opens request channels, routes response frames back to them.

Everything arriving from a worker lands here first: READY/BOOT_ERROR resolve `ready`, response frames go
to the channel's `ResponseStream`, events and retire requests go to the supervisor's callbacks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

from edgecli import ipc
from edgecli.ipc import MORE, Kind

LENT_KINDS = frozenset({Kind.LENT_BUSY, Kind.LENT_STARTED, Kind.LENT_ENDED, Kind.RELEASED, Kind.LENT_CLOSED})


class BootError(Exception):
    """The function failed to boot: import error, no handler, or the worker died while booting."""

    def __init__(self, message: str, error: str = "", *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.error = error or message
        # Nothing wrong with the function (no worker could be started at all): worth trying again soon.
        self.transient = transient


class Lost:
    """Marker put on every open stream when the worker goes away."""


LOST = Lost()
# What a stream yields: ("start", status, headers) | ("body", bytes, more) | ("failed", message) |
# ("accept", subprotocol, headers) | ("ws", bytes, is_text) | ("close", code, reason) | LOST, and whatever
# marker the relay itself puts there (the client left, a timeout).
StreamItem = Any


def _start(flags: int, payload: bytes) -> StreamItem:
    msg = ipc.loads(payload)
    return ("start", msg["status"], ipc.decode_headers(msg["headers"]))


def _accept(flags: int, payload: bytes) -> StreamItem:
    msg = ipc.loads(payload)
    return ("accept", msg["subprotocol"], ipc.decode_headers(msg["headers"]))


def _close(flags: int, payload: bytes) -> StreamItem:
    msg = ipc.loads(payload)
    return ("close", msg["code"], msg["reason"])


# The frames that belong to one request's stream, and the item each is there. A table rather than a
# chain of comparisons: most frames are these, or a lent connection's, and each costs one look-up.
TO_STREAM: dict[int, Callable[[int, bytes], StreamItem]] = {
    Kind.RESPONSE: lambda flags, payload: ("body", payload, bool(flags & MORE)),
    Kind.START: _start,
    Kind.WS_SEND: lambda flags, payload: ("ws", payload, bool(flags & ipc.TEXT)),
    Kind.WS_ACCEPT: _accept,
    Kind.WS_CLOSE: _close,
    Kind.FAILED: lambda flags, payload: ("failed", ipc.loads(payload)["message"]),
}


class ResponseStream(ipc.Inbox):
    """One request's items from the worker, in order; one reader (the relay), one writer (the socket)."""

    __slots__ = ()


class WorkerConnection:
    def __init__(
        self,
        on_event: Callable[[bytes], None],  # an event's row as JSON (edgecli.events.Event.to_row_json)
        on_retire: Callable[[str], None],
        on_lost: Callable[[], None],
        on_lent: Callable[[int, int, bytes], None] = lambda kind, channel, payload: None,
        on_fault: Callable[[str], None] = ipc.print_fault,  # a frame's handling raised (ipc.frame_fault)
    ) -> None:
        self.proto = ipc.FrameProtocol(self._on_frame, self._on_lost, coalesce=True, on_fault=on_fault)
        self.streams: dict[int, ResponseStream] = {}
        self.credits: dict[int, ipc.Credit] = {}  # request body bytes the worker has not consumed yet
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.bye: dict[str, Any] | None = None
        self._channels = itertools.count(1)
        self._on_event = on_event
        self._on_retire = on_retire
        self._on_lost_cb = on_lost
        self._on_lent = on_lent  # what the worker says about a lent connection: (kind, channel, payload)

    @property
    def closed(self) -> bool:
        return self.proto.closed

    def read_remaining(self, limit: int = 64) -> None:
        """Take in what the worker wrote and serve has not read yet (its last events, its BYE): its exit
        may be reported before the socket is read. Up to `limit` reads of 64 KB, never waiting."""
        transport = self.proto.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or self.proto.closed:
            return
        for _ in range(limit):
            try:
                data = os.read(sock.fileno(), 1 << 16)
            except OSError:  # nothing more now (EAGAIN), or the socket is gone
                return
            if not data:
                return
            self.proto.data_received(data)

    # -- host -> worker --------------------------------------------------------------------------------

    def open(self, scope_payload: bytes, first_body: bytes | None, more: bool) -> tuple[int, ResponseStream]:
        """Start a request; the first body chunk (None: none yet) goes in the same write."""
        channel = next(self._channels)
        stream = ResponseStream()
        self.streams[channel] = stream
        frames = ipc.pack(Kind.REQUEST, channel, scope_payload)
        if first_body is None:
            credit = self.credits[channel] = ipc.Credit()
            credit.sent(ipc.WINDOW)  # 100-continue: no body until the worker grants credit
        else:
            frames += ipc.pack(Kind.BODY, channel, first_body, MORE if more else 0)
            if more:  # only a body still to come needs flow control
                self.credits[channel] = ipc.Credit()
                self.credits[channel].sent(len(first_body))
        self.proto.write(frames)
        return channel, stream

    def new_channel(self) -> int:
        """A channel for a lent connection: numbered with the requests', so the two never meet."""
        return next(self._channels)

    def recall(self, closing: bool = False) -> None:
        """Have the worker give its lent connections back; `closing`: serve is stopping, so the responses
        still in flight say `connection: close` and their connections end there, as uvicorn's would."""
        self.proto.write(ipc.pack(Kind.RECALL, 0, ipc.RECALL_CLOSING if closing else b""))

    def open_socket(self, scope_payload: bytes, stream: ResponseStream) -> int:
        """Start a WebSocket: the client's messages then go under the channel's window (`ws_send`)."""
        channel = next(self._channels)
        self.streams[channel] = stream
        self.credits[channel] = ipc.Credit()
        self.proto.write(ipc.pack(Kind.REQUEST, channel, scope_payload))
        return channel

    async def send_body(self, channel: int, body: bytes, more: bool) -> None:
        """A request body message, in pieces, each once the worker has room for it."""
        credit = self.credits.get(channel)
        for part, rest in ipc.pieces(body):
            if credit is None or credit.closed:
                return
            await credit.wait()
            part_more = more or rest
            if part_more:
                credit.sent(len(part))
            self.proto.write(ipc.pack(Kind.BODY, channel, part, MORE if part_more else 0))
            await self.proto.drain()

    async def wait_for_credit(self, channel: int) -> None:
        credit = self.credits.get(channel)
        if credit is not None:
            await credit.wait()

    def consumed(self, channel: int, count: int) -> None:
        """The client took `count` response bytes of `channel`: the worker may send that many more."""
        self.proto.write(ipc.pack_count(Kind.CREDIT, channel, count))

    async def ws_send(self, channel: int, data: bytes, text: bool) -> None:
        """A client's WebSocket message, once the worker has room for it (dropped once the channel is
        closed)."""
        credit = self.credits.get(channel)
        if credit is None:
            return
        if credit.out >= ipc.WINDOW:
            await credit.wait()
            if credit.closed:
                return
        credit.sent(ipc.message_cost(data))
        self.proto.write(ipc.pack(Kind.WS_RECEIVE, channel, data, ipc.TEXT if text else 0))
        if self.proto.paused:
            await self.proto.drain()

    def ws_send_now(self, channel: int, data: bytes, text: bool) -> bool:
        """A client's WebSocket message, written now if the worker has room for it; False: not sent."""
        credit = self.credits.get(channel)
        if credit is None or credit.closed or credit.out >= ipc.WINDOW or self.proto.paused:
            return False
        credit.sent(ipc.message_cost(data))
        self.proto.write(ipc.pack(Kind.WS_RECEIVE, channel, data, ipc.TEXT if text else 0))
        return True

    def disconnect(self, channel: int, code: int | None = None) -> None:
        payload = b"" if code is None else ipc.COUNT.pack(code)
        self.proto.write(ipc.pack(Kind.DISCONNECT, channel, payload))

    def close_channel(self, channel: int) -> None:
        self.streams.pop(channel, None)
        credit = self.credits.pop(channel, None)
        if credit is not None:
            credit.close()

    def notice(self, reason: str) -> None:
        self.proto.write(ipc.pack_json(Kind.NOTICE, 0, {"reason": reason}))

    def stop(self, grace: float, reason: str) -> None:
        self.proto.write(ipc.pack_json(Kind.STOP, 0, {"grace": grace, "reason": reason}))

    # -- worker -> host --------------------------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, channel: int, payload: bytes) -> None:
        to_item = TO_STREAM.get(kind)
        if to_item is not None:
            stream = self.streams.get(channel)
            if stream is not None:
                stream.put(to_item(flags, payload))
        elif kind in LENT_KINDS:
            self._on_lent(kind, channel, payload)
        elif kind == Kind.EVENT:
            self._on_event(payload)
        elif kind == Kind.CREDIT:
            credit = self.credits.get(channel)
            if credit is not None:
                credit.consumed(ipc.unpack_count(payload))
        elif kind == Kind.READY:
            if not self.ready.done():
                self.ready.set_result(ipc.loads(payload))
        elif kind == Kind.BOOT_ERROR:
            msg = ipc.loads(payload)
            if not self.ready.done():
                self.ready.set_exception(BootError(msg["message"], msg["error"]))
        elif kind == Kind.RETIRE:
            self._on_retire(ipc.loads(payload)["reason"])
        elif kind == Kind.BYE:
            self.bye = ipc.loads(payload)

    def _on_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(BootError("the worker exited while booting"))
        for stream in self.streams.values():
            stream.put(LOST)
        for credit in self.credits.values():
            credit.close()
        self._on_lost_cb()
