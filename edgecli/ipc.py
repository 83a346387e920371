"""The one wire protocol between the host (serve process) and a worker, used by both sides.

A worker and the host share one Unix stream socket. Everything on it is a frame:

    header = kind (1 byte) | flags (1 byte) | channel (uint32) | length (uint32), then `length` bytes

`channel` multiplexes concurrent requests and WebSockets (0 = the worker itself). Bodies and WebSocket
messages travel as raw bytes, so a 20 MB upload is never JSON-encoded; control messages carry compact
JSON. ASGI messages map one-to-one: the scope, `http.request` body chunks, `http.response.start`,
`http.response.body`, `websocket.accept/send/receive/close`.

Flow control is part of the protocol, the same both ways: the sender of a body (the host for a request,
the worker for a response) keeps at most `WINDOW` bytes of one channel unconsumed, in pieces of at most
`PIECE` bytes; the reader returns a CREDIT frame for each piece its consumer took (the app's `receive()`,
or the client's socket). WebSocket messages travel under the same window in both directions (the host
sends the client's, the worker the app's), each counted as its payload plus a frame header so that empty
messages count too; their reader gathers credit and returns it in batches (`Owed`). A slow reader
therefore holds up its own sender only, never the socket the other channels share, and no side ever
buffers a whole upload, a whole large response or a flood of messages.

The transport side (`FrameProtocol`) is an asyncio.Protocol with write back-pressure, shared by the
host's connection to each worker and by the worker's connection to the host.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import struct
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any, cast
from urllib.parse import unquote

from edgecli.batching import PassBatchingTransport

HEADER = struct.Struct("!BBII")
COUNT = struct.Struct("!I")
MORE = 0x01  # flags bit: more body follows (ASGI `more_body`)
TEXT = 0x02  # flags bit: a WebSocket message is text (UTF-8), not bytes
WINDOW = 1 << 19  # unconsumed body bytes a sender may have out per channel before it waits for CREDIT
PIECE = 1 << 16  # larger body messages are cut into pieces of this size, forwarded as they arrive
# Above this many unsent bytes a writer waits; keeps a fast sender from buffering a whole upload in memory.
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18


class Kind(IntEnum):
    # host -> worker
    REQUEST = 1  # JSON scope (+ request id) opens channel
    BODY = 2  # raw request body chunk; MORE flag
    DISCONNECT = 3  # the client went away
    NOTICE = 4  # JSON {"reason"}: fire beforeunload now (a limit is near), keep running
    STOP = 5  # JSON {"grace": s, "reason": r}: drain then leave; grace 0 = cancel everything now
    WS_RECEIVE = 6  # a WebSocket message from the client; TEXT flag
    CREDIT = 7  # both ways: uint32, body (or message) bytes of the channel its reader consumed
    RECALL = 8  # give every lent connection back once it is idle (the connection itself: LEND, below)
    # worker -> host
    READY = 10  # JSON {"boot_ms", "pid"}
    BOOT_ERROR = 11  # JSON {"message", "error"}
    START = 12  # JSON {"status", "headers"}
    RESPONSE = 13  # raw response body chunk; MORE flag
    FAILED = 14  # JSON {"message"}: the app raised or returned a non-response
    EVENT = 15  # JSON array: the event's row (edgecli.events.Event.to_row_json)
    RETIRE = 16  # JSON {"reason"}: the worker asks to take no new requests (unhandled rejection)
    BYE = 17  # JSON {"reason", "cpu_ms", "memory_mb"}: the worker is leaving on its own
    WS_ACCEPT = 18  # JSON {"subprotocol", "headers"}: the app accepted the WebSocket
    WS_SEND = 19  # a WebSocket message from the app; TEXT flag
    WS_CLOSE = 20  # JSON {"code", "reason"}: the app closed (or refused, before accepting) the socket
    # worker -> host, on a lent connection's channel
    LENT_BUSY = 21  # "<method> <target> <request id>" (latin-1): a request began
    LENT_STARTED = 22  # the response's head left and its body is still coming
    RELEASED = 23  # the connection is serve's again; the payload: the bytes read of its next request
    LENT_CLOSED = 24  # the connection ended in the worker
    LENT_ENDED = 25  # uint16 status, float64 ms, then LENT_BUSY's payload: serve records the request


def pack(kind: Kind, channel: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(kind, flags, channel, len(payload)) + payload


def pack_json(kind: Kind, channel: int, obj: Any) -> bytes:
    return pack(kind, channel, dumps(obj))


# Compact ASCII JSON, `str()` for what JSON cannot hold; one encoder for every frame.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def dumps(obj: Any) -> bytes:
    return _encode(obj).encode()


# A frame's payload is one JSON document from our own peer, in UTF-8: decoded as such, without
# `json.loads`' encoding detection and whitespace checks on every frame.
_decode = json.JSONDecoder().raw_decode


def loads(payload: bytes) -> Any:
    return _decode(payload.decode())[0]


class FrameParser:
    """Turns a byte stream into (kind, flags, channel, payload) frames; feed it whatever recv returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buf = self._buf
        buf += data
        frames: list[tuple[int, int, int, bytes]] = []
        pos = 0
        size = HEADER.size
        end = len(buf)
        while end - pos >= size:
            kind, flags, channel, length = HEADER.unpack_from(buf, pos)
            if end - pos - size < length:
                break
            start = pos + size
            frames.append((kind, flags, channel, bytes(buf[start : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames


FrameHandler = Callable[[int, int, int, bytes], None]


def frame_fault(kind: int, channel: int, exc: BaseException) -> str:
    """What to say when handling one frame raised: a bug of edgecli's, never the user's."""
    name = Kind(kind).name if kind in set(Kind) else f"kind {kind}"
    trace = "".join(traceback.format_exception(exc)).rstrip()
    return (
        f"edgecli: internal error while handling a {name} frame (channel {channel}): {exc!r}. The other "
        "requests on this worker's connection go on; the one this frame was about may not get its answer "
        f"until a timeout ends it. This is a bug in edgecli: please report it with this traceback.\n{trace}"
    )


def print_fault(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


class FrameProtocol(asyncio.Protocol):
    """Frames over a stream transport, with `drain()` for back-pressure. One per worker socket.

    With `coalesce`, frames written during one pass of the event loop leave together in one write at
    the end of the pass (edgecli/batching.py). `drain()` and `close()` send what is held first, so
    back-pressure and ordering are as without it.
    """

    def __init__(
        self,
        on_frame: FrameHandler,
        on_lost: Callable[[Exception | None], None],
        *,
        coalesce: bool = False,
        on_fault: Callable[[str], None] = print_fault,
    ) -> None:
        self._parser = FrameParser()
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_fault = on_fault  # told `frame_fault`'s account of a frame whose handling raised
        self._coalesce = coalesce
        self._batch: PassBatchingTransport | None = None
        self.transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        if self._coalesce:
            self._batch = PassBatchingTransport(self.transport, asyncio.get_running_loop())
            self.transport = cast(asyncio.Transport, self._batch)

    def data_received(self, data: bytes) -> None:
        on_frame = self._on_frame
        for frame in self._parser.feed(data):
            try:
                on_frame(*frame)
            except Exception as exc:
                # Raised out of here, it would close the transport: every request on the connection would
                # be lost with the one frame, and the frames after it in this read.
                self._on_fault(frame_fault(frame[0], frame[2], exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()  # wake writers; their next write is dropped
        self._on_lost(exc)

    @property
    def paused(self) -> bool:
        """More than HIGH_WATER is unsent: a writer should `drain()` before writing more."""
        return not self._can_write.is_set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame)

    def flush(self) -> None:
        if self._batch is not None:
            self._batch.flush()

    async def drain(self) -> None:
        self.flush()
        if not self._can_write.is_set():
            await self._can_write.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # a batching transport sends what it holds first


def pack_count(kind: Kind, channel: int, count: int) -> bytes:
    return pack(kind, channel, COUNT.pack(count))


def unpack_count(payload: bytes) -> int:
    return int(COUNT.unpack(payload)[0])


class Credit:
    """A sender's side of one channel's flow control: bytes sent that the reader has not yet consumed.

    `wait()` returns at once while fewer than `WINDOW` bytes are out, else when CREDIT frames bring the
    count down (or the channel closes: a closed channel's sender stops waiting and its writes are
    dropped by the reader).
    """

    __slots__ = ("_waiter", "closed", "out")

    def __init__(self) -> None:
        self.out = 0
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def sent(self, count: int) -> None:
        self.out += count

    def consumed(self, count: int) -> None:
        self.out -= count
        if self.out < WINDOW:
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        while self.out >= WINDOW and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Inbox:
    """One channel's items in arrival order: one reader, one writer (the socket's frame handler).

    Not an asyncio.Queue: a queue's bookkeeping (getter deque, loop checks, wake-up machinery, made anew
    for every request) is a cost on both ends' per-request path. Here a future is made only when the
    reader has to wait.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


def message_cost(data: bytes) -> int:
    """What a WebSocket message counts against its channel's window: its payload and a frame header."""
    return len(data) + HEADER.size


class Owed:
    """A reader's side of one channel's WebSocket messages: what its consumer took and the sender has not
    yet been credited for. Messages are often small, and a CREDIT frame per message would double the
    frames on the socket; credit is returned once `BATCH` bytes are owed. The sender still never stalls
    on it: a sender that is waiting has a whole `WINDOW` out, and once its consumer has taken that much,
    more than `BATCH` is owed."""

    BATCH = WINDOW // 4
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def took(self, cost: int) -> int:
        """The consumer took a message of `cost`: the credit to return now (0: not yet)."""
        count = self.count + cost
        if count < self.BATCH:
            self.count = count
            return 0
        self.count = 0
        return count


def pieces(body: bytes) -> Iterator[tuple[bytes, bool]]:
    """A body message as the pieces it travels in, each with whether more of the message follows. Cut
    as they are sent, so that the first piece of a large body leaves before the rest is copied."""
    if len(body) <= PIECE:
        yield body, False
        return
    view = memoryview(body)
    for i in range(0, len(body), PIECE):
        yield bytes(view[i : i + PIECE]), i + PIECE < len(body)


def encode_scope(scope: dict[str, Any], request_id: str) -> bytes:
    """The parts of an ASGI http or websocket scope a worker needs, JSON-safe (bytes as latin-1, as HTTP
    allows)."""
    data = {
        "request_id": request_id,
        "type": scope.get("type", "http"),
        "root_path": scope.get("root_path", ""),
        "http_version": scope.get("http_version", "1.1"),
        "method": scope.get("method", "GET"),
        "scheme": scope.get("scheme", "http"),
        "path": scope["path"],
        "raw_path": (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        "query_string": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
    }
    if "subprotocols" in scope:
        data["subprotocols"] = scope["subprotocols"]
    return dumps(data)


def decode_scope(payload: bytes) -> tuple[dict[str, Any], str]:
    data = loads(payload)
    kind = data.get("type", "http")
    scope = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3" if kind == "http" else "2.4"},
        "http_version": data["http_version"],
        "scheme": data["scheme"],
        "path": data["path"],
        "raw_path": data["raw_path"].encode("latin-1"),
        "root_path": data.get("root_path", ""),
        "query_string": data["query_string"].encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in data["headers"]],
        "client": tuple(data["client"]) if data["client"] else None,
        "server": tuple(data["server"]) if data["server"] else None,
        "state": {},
    }
    if kind == "http":
        scope["method"] = data["method"]
    else:
        scope["subprotocols"] = data.get("subprotocols", [])
    return scope, data["request_id"]


def start_frame(channel: int, message: Any) -> bytes:
    """An ASGI `http.response.start` message as the frame a worker sends."""
    headers = encode_headers(message.get("headers") or [])
    return pack_json(Kind.START, channel, {"status": message["status"], "headers": headers})


def body_frame(channel: int, message: Any) -> bytes:
    """An ASGI `http.response.body` message as the frame a worker sends (MORE while more follows)."""
    more = MORE if message.get("more_body", False) else 0
    return pack(Kind.RESPONSE, channel, bytes(message.get("body", b"")), more)


def encode_headers(headers: list[tuple[bytes, bytes]] | Any) -> list[list[str]]:
    return [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")] for k, v in headers]


def decode_headers(headers: list[list[str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def busy_payload(request_id: str, method: str, target: bytes) -> bytes:
    """LENT_BUSY's payload, plain text: serve reads it once, for the request's record (with LENT_ENDED, or
    when the worker dies under the request). `target`: the request line's, as the client sent it."""
    # The id last: a client's x-request-id may hold spaces, a method and a request-target never do.
    return f"{method} ".encode("latin-1") + target + f" {request_id}".encode("latin-1")


def read_busy(payload: bytes) -> tuple[str, str, str]:
    """(request id, method, path as the ASGI scope has it) of a LENT_BUSY payload."""
    method, target, request_id = payload.decode("latin-1").split(" ", 2)
    return request_id, method, unquote(target.partition("?")[0])


# A lent request's end: what serve needs for its record beside what LENT_BUSY told it, packed, so that the
# worker (the one process on the request's path) neither builds nor encodes an event per request. The
# busy payload rides along because the connection may be serve's again by the time this is read.
_ENDED = struct.Struct("!Hd")


def ended_payload(status: int, duration_ms: float, busy: bytes) -> bytes:
    return _ENDED.pack(status, duration_ms) + busy


def read_ended(payload: bytes) -> tuple[int, float, bytes]:
    """(status, duration in ms, the LENT_BUSY payload) of a LENT_ENDED payload."""
    status, duration_ms = _ENDED.unpack_from(payload)
    return status, duration_ms, payload[_ENDED.size :]


# -- lending: a client's socket handed to a worker (docs/architecture.md, "Lent connections") --------
# Over a SOCK_SEQPACKET socket of its own, since a stream transport drops the fds attached to its bytes:
# one JSON message per packet, the client's fd attached.

LEND_PACKET = 1 << 16
RECALL_CLOSING = b"closing"  # RECALL's payload when serve stops


def send_lend(sock: socket.socket, message: Any, fd: int) -> None:
    sock.sendmsg([dumps(message)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def receive_lend(sock: socket.socket) -> tuple[bytes, int | None]:
    """One lend message and its fd (b"", None at EOF). Raises BlockingIOError when none is waiting."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(LEND_PACKET, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        return msg, None
    os.set_inheritable(fds[0], False)  # a process the function starts must not keep the client's socket
    return msg, fds[0]
