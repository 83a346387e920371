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
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from edgecli import ipc
from edgecli.host.exchange import CLIENT_GONE, Exchange

if TYPE_CHECKING:
    from edgecli.host.relay import Scope

ABNORMAL = 1006  # the client's connection ended without a close frame


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, except that stopping serve does not close an open socket at once:
    uvicorn waits for it as for any response in flight, and the relay closes it at its deadline."""

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


class SocketExchange(Exchange):
    """One WebSocket between the client and a worker, until either side closes it or serve does."""

    __slots__ = ("owed",)

    async def websocket(self, inner: Scope) -> int:
        payload = ipc.encode_scope(inner, self.request_id)
        self.channel, self.stream = self.conn.open_socket(payload)
        self.worker.opened(self.channel, self.request_id, self.deadline)
        self.owed = ipc.Owed()
        item = await self.first_item()
        if isinstance(item, tuple) and item[0] in ("close", "start"):
            # Closed before accepting (or answered as plain HTTP, by a worker that knows no WebSockets):
            # uvicorn answers the handshake with 403, as it does for a bare app that closes.
            await self.send({"type": "websocket.close", "code": 1000, "reason": ""})
            return 403
        if isinstance(item, Closing):
            # Still in its handshake at the deadline: refused as uvicorn refuses one when it stops.
            self.conn.disconnect(self.channel, item.code)
            return await self.relay.plain(
                self.scope, self.send, 500, b"Internal Server Error", self.request_id
            )
        if not isinstance(item, tuple) or item[0] != "accept":
            return await self.refuse(item)
        _, subprotocol, headers = item
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        self.pump = asyncio.ensure_future(self.pump_messages())
        await self.forward_messages()
        return 101

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
            await conn.ws_send(channel, data, text is not None)

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
