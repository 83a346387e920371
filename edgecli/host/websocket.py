"""Serve's side of WebSockets: the protocol uvicorn runs for them, and one socket relayed to a worker.

A socket is relayed message by message over its worker's channel, under the wire's flow control in both
directions (ipc.py): the client's messages go to the worker as the app takes them, the app's to the
client as its socket takes them, so a slow side holds up only its own sender.

An open socket is in-flight work. When its worker stops taking requests (a reload, a retirement, serve
stopping), the socket stays open for the function's graceful_exit_timeout_sec; then serve closes it:
1012 (service restart) when serve stops or the function was reloaded, 1001 (going away) when the worker
retires for its own reasons, 1011 when a limit killed the worker. See docs/architecture.md, "WebSockets".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from edgecli import ipc
from edgecli.answers import plain
from edgecli.host.connection import ResponseStream, StreamItem
from edgecli.host.exchange import CLIENT_GONE, Exchange

if TYPE_CHECKING:
    from edgecli.answers import Scope

ABNORMAL = 1006  # the client's connection ended without a close frame


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with two differences.

    Stopping serve does not close an open socket at once: uvicorn waits for it as for any response in
    flight, and the relay closes it at its deadline.

    Messages can pass through without a task switch: a relayed socket sets `sink`, which takes a
    client's message straight from `data_received` to the worker while its window has room, and calls
    `send_now` with the app's messages while the client's socket is writable. Anything else (a full
    window, a client that reads slowly, the close) goes uvicorn's own way, through `receive()` and
    `send()`. A round trip through serve then costs two socket callbacks rather than two task wake-ups,
    two queue passes and a pause and resume of reading per message.
    """

    sink: Callable[[bytes, bool], bool] | None = None

    def send_receive_event_to_app(self) -> None:
        sink = self.sink
        if sink is None or self.close_sent or not self.queue.empty():
            super().send_receive_event_to_app()  # in order, after what is queued already
            return
        frames = self.frames
        data = bytes(frames[0]) if len(frames) == 1 else b"".join(frames)
        text = self.curr_msg_data_type == "text"
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:
                super().send_receive_event_to_app()  # uvicorn closes the socket with 1007
                return
        if sink(data, text):
            self.frames = []
        else:
            super().send_receive_event_to_app()

    def send_now(self, data: bytes, text: bool) -> bool:
        """Send the app's message now if it can go at once (open and writable); False: not sent."""
        if self.disconnected or self.close_sent or not self.writable.is_set():
            return False
        try:
            if text:
                self.conn.send_text(data)
            else:
                self.conn.send_binary(data)
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def shutdown(self) -> None:
        open_ = self.handshake_complete and self.initial_response is None
        if open_ and not (self.disconnected or self.close_sent):
            return
        super().shutdown()


class Closing:
    """A marker serve puts on a socket's stream: close it now with `code` (the deadline ran out)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


class SocketStream(ResponseStream):
    """A socket's items from the worker. While its reader waits with nothing queued, an app's message is
    offered to `direct` first, which sends it to the client at once if it can."""

    __slots__ = ("direct",)

    def __init__(self) -> None:
        super().__init__()
        self.direct: Callable[[bytes, bool], bool] | None = None

    def put(self, item: StreamItem) -> None:
        direct = self.direct
        idle = direct is not None and self._waiter is not None and not self._items
        if idle and type(item) is tuple and item[0] == "ws" and direct(item[1], item[2]):  # type: ignore[misc]
            return
        super().put(item)


class SocketExchange(Exchange):
    """One WebSocket between the client and a worker, until either side closes it or serve does."""

    __slots__ = ("holding", "owed", "protocol")

    async def websocket(self, inner: Scope) -> int:
        payload = ipc.encode_scope(inner, self.request_id)
        self.stream = SocketStream()
        self.channel = self.conn.open_socket(payload, self.stream)
        self.worker.opened(self.channel, self.request_id, self.deadline)
        self.owed = ipc.Owed()
        self.holding = False  # the pump holds a client's message the window has no room for yet
        item = await self.first_item()
        if isinstance(item, tuple) and item[0] in ("close", "start"):
            # Closed before accepting (or answered as plain HTTP, by a worker that knows no WebSockets):
            # uvicorn answers the handshake with 403, as it does for a bare app that closes.
            await self.send({"type": "websocket.close", "code": 1000, "reason": ""})
            return 403
        if isinstance(item, Closing):
            # Still in its handshake at the deadline: refused as uvicorn refuses one when it stops.
            self.conn.disconnect(self.channel, item.code)
            return await plain(self.scope, self.send, 500, b"Internal Server Error", self.request_id)
        if not isinstance(item, tuple) or item[0] != "accept":
            return await self.refuse(item)
        _, subprotocol, headers = item
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        self.pump = asyncio.ensure_future(self.pump_messages())
        protocol = getattr(self.receive, "__self__", None)  # not ours under another server or a test
        self.protocol = protocol if isinstance(protocol, WebSocketProtocol) else None
        if self.protocol is not None:
            self.protocol.sink = self.take
            self.stream.direct = self.give
        try:
            await self.forward_messages()
        finally:
            self.stream.direct = None
            if self.protocol is not None:
                self.protocol.sink = None
        return 101

    def take(self, data: bytes, text: bool) -> bool:
        """A client's message, straight from the socket: to the worker now if its window has room."""
        return not self.holding and self.conn.ws_send_now(self.channel, data, text)

    def give(self, data: bytes, text: bool) -> bool:
        """An app's message, straight from the worker's socket: to the client now if it can take it."""
        assert self.protocol is not None
        if not self.protocol.send_now(data, text):
            return False
        credit = self.owed.took(ipc.message_cost(data))
        if credit:
            self.conn.consumed(self.channel, credit)
        return True

    def deadline(self, code: int) -> None:
        """The worker's graceful timeout ran out with this socket open: close it with `code`."""
        self.stream.put(Closing(code))

    async def pump_messages(self) -> None:
        """Client → worker, message by message as the app takes them, until the client closes."""
        receive, conn, channel = self.receive, self.conn, self.channel
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                conn.disconnect(channel, int(message.get("code", 1005)))
                self.stream.put(CLIENT_GONE)
                return
            text = message.get("text")
            data = text.encode() if text is not None else message.get("bytes") or b""
            self.holding = True  # until it is sent, later messages queue behind it
            try:
                await conn.ws_send(channel, data, text is not None)
            finally:
                self.holding = False

    async def forward_messages(self) -> None:
        """Worker → client as the client's socket takes them, until either side closes; a worker that dies
        closes the socket with 1011."""
        stream, send, conn, channel, owed = self.stream, self.send, self.conn, self.channel, self.owed
        while True:
            item = await stream.get()
            if type(item) is not tuple or item[0] != "ws":
                await self.finish(item)
                return
            _, data, text = item
            message: dict[str, Any] = (
                {"type": "websocket.send", "text": data.decode()}
                if text
                else {"type": "websocket.send", "bytes": data}
            )
            try:
                await send(message)
            except OSError:  # the client is gone: the app hears so
                conn.disconnect(channel, ABNORMAL)
                return
            credit = owed.took(ipc.message_cost(data))
            if credit:
                conn.consumed(channel, credit)

    async def finish(self, item: Any) -> None:
        if item is CLIENT_GONE:
            return
        if isinstance(item, Closing):
            self.conn.disconnect(self.channel, item.code)  # the app hears the code the client gets
            await self.close_socket(item.code, "")
        elif isinstance(item, tuple) and item[0] == "close":
            await self.close_socket(item[1], item[2])
        else:
            await self.close_socket(1011, "the function's worker stopped")

    async def close_socket(self, code: int, reason: str) -> None:
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):  # the client is gone already
            pass
