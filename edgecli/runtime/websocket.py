"""One WebSocket inside the worker: the app's receive() and send(), under the wire's flow control.

The host sends the client's messages only while the app has room for them (ipc.py): `receive()` credits
what the app took. The app's own messages wait in `send()` while a window of them is out that the client
has not yet taken, as under uvicorn a send waits while the client's socket is full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgecli import ipc
from edgecli.ipc import TEXT, Kind

if TYPE_CHECKING:
    from edgecli.runtime.channels import Channel


class ClientDisconnected(OSError):
    """The app sent on a WebSocket whose client has gone (uvicorn raises the same kind of error)."""


class SocketIO:
    """The app's receive() and send() for the WebSocket on `channel`."""

    __slots__ = ("chan", "channel", "owed", "proto", "write_last")

    def __init__(
        self, proto: ipc.FrameProtocol, channel: int, chan: Channel, write_last: Callable[[bytes], None]
    ) -> None:
        self.proto = proto
        self.channel = channel
        self.chan = chan
        self.owed = ipc.Owed()
        self.write_last = write_last

    async def receive(self) -> dict[str, Any]:
        chan = self.chan
        if not chan.connected:
            chan.connected = True
            return {"type": "websocket.connect"}
        item = await chan.inbox.get()
        if type(item) is not tuple:  # the disconnect marker: every later receive() sees it too
            chan.inbox.put(item)
            return {"type": "websocket.disconnect", "code": chan.close_code}
        data, flags = item
        credit = self.owed.took(ipc.message_cost(data))
        if credit:
            self.proto.write(ipc.pack_count(Kind.CREDIT, self.channel, credit))
        if flags & TEXT:
            return {"type": "websocket.receive", "text": data.decode()}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: Any) -> None:
        chan = self.chan
        kind = message["type"]
        if chan.disconnected or (chan.started and not chan.accepted):
            raise ClientDisconnected(f"the WebSocket is closed; cannot send {kind}")
        if kind == "websocket.send":
            text = message.get("text")
            data, flags = (text.encode(), TEXT) if text is not None else (message.get("bytes") or b"", 0)
            credit = chan.credit
            if credit.out >= ipc.WINDOW:
                await credit.wait()
                if chan.disconnected:
                    raise ClientDisconnected("the WebSocket closed while its client was not reading")
            credit.sent(ipc.message_cost(data))
            proto = self.proto
            proto.write(ipc.pack(Kind.WS_SEND, self.channel, data, flags))
            if proto.paused:
                await proto.drain()
        elif kind == "websocket.accept":
            chan.started = chan.accepted = True
            headers = ipc.encode_headers(message.get("headers") or [])
            accept = {"subprotocol": message.get("subprotocol"), "headers": headers}
            self.proto.write(ipc.pack_json(Kind.WS_ACCEPT, self.channel, accept))
        elif kind == "websocket.close":
            self.end(int(message.get("code", 1000)), message.get("reason") or "")
            chan.disconnect()

    def end(self, code: int, reason: str = "") -> None:
        """Close the socket from this side, once: refused when never accepted (the client gets 403)."""
        chan = self.chan
        if chan.disconnected or (chan.started and not chan.accepted):
            return
        chan.started = True
        chan.accepted = False
        self.write_last(ipc.pack_json(Kind.WS_CLOSE, self.channel, {"code": code, "reason": reason}))
