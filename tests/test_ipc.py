"""Unit tests of the wire protocol shared by host and worker."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from edgecli import ipc
from edgecli.ipc import MORE, FrameParser, FrameProtocol, Kind


def test_frames_survive_any_split_of_the_byte_stream() -> None:
    stream = (
        ipc.pack(Kind.REQUEST, 1, b'{"a":1}')
        + ipc.pack(Kind.BODY, 1, b"x" * 1000, MORE)
        + ipc.pack(Kind.BODY, 1, b"")
        + ipc.pack_json(Kind.EVENT, 0, {"kind": "log"})
    )
    expected = FrameParser().feed(stream)
    assert [f[0] for f in expected] == [Kind.REQUEST, Kind.BODY, Kind.BODY, Kind.EVENT]
    assert expected[1][1] == MORE and expected[2][1] == 0
    for size in (1, 3, 7, 64, 1001):
        parser = FrameParser()
        frames = []
        for i in range(0, len(stream), size):
            frames += parser.feed(stream[i : i + size])
        assert frames == expected, size


def test_scope_round_trip_keeps_bytes_exact() -> None:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/hello/ä b",
        "raw_path": b"/hello/%C3%A4%20b",
        "query_string": b"x=1&y=%FF",
        "headers": [(b"content-type", b"application/json"), (b"x-bin", bytes(range(128, 140)))],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 54321),
    }
    decoded, request_id = ipc.decode_scope(ipc.encode_scope(scope, "req-1"))
    assert request_id == "req-1"
    for key in ("method", "path", "raw_path", "query_string", "headers", "client", "server"):
        assert decoded[key] == scope[key], key
    assert decoded["root_path"] == "" and decoded["type"] == "http"


def test_websocket_scope_round_trip() -> None:
    scope = {
        "type": "websocket",
        "path": "/functions/v1/chat/ws",
        "raw_path": b"/functions/v1/chat/ws",
        "root_path": "/functions/v1",
        "query_string": b"",
        "headers": [(b"sec-websocket-protocol", b"chat")],
        "subprotocols": ["chat"],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 54321),
    }
    decoded, _ = ipc.decode_scope(ipc.encode_scope(scope, "req-2"))
    assert decoded["type"] == "websocket" and "method" not in decoded
    assert decoded["subprotocols"] == ["chat"] and decoded["root_path"] == "/functions/v1"
    assert decoded["asgi"]["spec_version"] == "2.4"


def test_large_bodies_travel_in_pieces() -> None:
    assert list(ipc.pieces(b"abc")) == [(b"abc", False)]
    body = bytes(range(256)) * 1000
    parts = list(ipc.pieces(body))
    assert b"".join(p for p, _ in parts) == body and max(len(p) for p, _ in parts) == ipc.PIECE
    assert [rest for _, rest in parts] == [True] * (len(parts) - 1) + [False]


@pytest.mark.timeout(10)
def test_credit_holds_a_sender_at_the_window_until_its_reader_consumes() -> None:
    async def main() -> None:
        credit = ipc.Credit()
        credit.sent(ipc.WINDOW - 1)
        await credit.wait()  # below the window: no wait
        credit.sent(1)
        waiter = asyncio.ensure_future(credit.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        credit.consumed(1)
        await asyncio.wait_for(waiter, 5)
        credit.sent(1)
        closing = asyncio.ensure_future(credit.wait())
        await asyncio.sleep(0)
        credit.close()  # a closed channel releases its sender
        await asyncio.wait_for(closing, 5)

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_a_reader_that_does_not_consume_holds_at_most_a_window_of_body() -> None:
    from edgecli.host.connection import WorkerConnection

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        conn = WorkerConnection(lambda row: None, lambda reason: None, lambda: None)
        conn.ready.set_result({})  # booted, as far as this test is concerned
        await loop.connect_accepted_socket(lambda: conn.proto, a)
        received: list[int] = [0]

        def on_frame(kind: int, flags: int, channel: int, payload: bytes) -> None:
            if kind == Kind.BODY:
                received[0] += len(payload)

        _, worker_side = await loop.connect_accepted_socket(
            lambda: FrameProtocol(on_frame, lambda e: None), b
        )
        channel, _ = conn.open(b"{}", b"", True)
        sending = asyncio.ensure_future(conn.send_body(channel, b"u" * (8 << 20), False))
        deadline = loop.time() + 10
        while received[0] < ipc.WINDOW and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert received[0] == ipc.WINDOW
        assert conn.credits[channel].out == ipc.WINDOW and not sending.done()  # parked on credit
        worker_side.write(ipc.pack_count(Kind.CREDIT, channel, ipc.PIECE))
        while received[0] < ipc.WINDOW + ipc.PIECE and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert received[0] == ipc.WINDOW + ipc.PIECE
        conn.close_channel(channel)
        await asyncio.wait_for(sending, 5)  # a closed channel's sender gives up
        conn.proto.close()
        worker_side.close()

    asyncio.run(main())


def test_websocket_messages_count_their_header_and_credit_returns_in_batches() -> None:
    assert ipc.message_cost(b"") == ipc.HEADER.size, "a flood of empty messages still fills the window"
    owed = ipc.Owed()
    small = ipc.message_cost(b"x" * 90)
    returned = [owed.took(small) for _ in range(ipc.Owed.BATCH // small + 1)]
    assert returned[:-1] == [0] * (len(returned) - 1), "no CREDIT per small message"
    assert returned[-1] == small * len(returned) >= ipc.Owed.BATCH
    assert owed.took(ipc.message_cost(b"y" * ipc.WINDOW)) > ipc.WINDOW, "a large message at once"
    # A sender held at the window is always released: its reader, once it has taken a whole window,
    # owes at least a batch.
    assert ipc.Owed.BATCH <= ipc.WINDOW


def test_headers_round_trip() -> None:
    headers = [(b"a", b"1"), (b"set-cookie", b"x=\xe9")]
    assert ipc.decode_headers(ipc.encode_headers(headers)) == headers


@pytest.mark.timeout(10)
def test_protocol_delivers_frames_and_reports_loss() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        got: list[tuple[int, int, int, bytes]] = []
        lost = loop.create_future()
        _, left = await loop.connect_accepted_socket(
            lambda: FrameProtocol(lambda *f: None, lambda e: None), a
        )
        await loop.connect_accepted_socket(
            lambda: FrameProtocol(lambda *f: got.append(f), lambda e: lost.set_result(True)), b
        )
        big = b"z" * (3 << 20)  # larger than the high-water mark: drain() must wait, then pass
        left.write(ipc.pack(Kind.RESPONSE, 9, big, MORE))
        await left.drain()
        left.write(ipc.pack(Kind.RESPONSE, 9, b"end"))
        left.close()
        await asyncio.wait_for(lost, 5)
        assert [(k, fl, ch, len(p)) for k, fl, ch, p in got] == [
            (Kind.RESPONSE, MORE, 9, len(big)),
            (Kind.RESPONSE, 0, 9, 3),
        ]

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_a_frame_whose_handling_raises_is_reported_and_the_connection_goes_on() -> None:
    """A bug in one frame's handling must not close the socket: the worker's other requests would go."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        got: list[int] = []
        faults: list[str] = []

        def on_frame(kind: int, flags: int, channel: int, payload: bytes) -> None:
            if channel == 2:
                raise KeyError("no such channel")
            got.append(channel)

        transport, _ = await loop.connect_accepted_socket(
            lambda: FrameProtocol(on_frame, lambda e: None, on_fault=faults.append), a
        )
        b.sendall(b"".join(ipc.pack(Kind.CREDIT, channel, b"") for channel in (1, 2, 3)))
        deadline = loop.time() + 5
        while len(got) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        b.sendall(ipc.pack(Kind.CREDIT, 4, b""))  # the socket is still open: later frames arrive too
        while len(got) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert got == [1, 3, 4]
        assert not transport.is_closing()
        assert len(faults) == 1
        assert faults[0].startswith("edgecli: internal error while handling a CREDIT frame (channel 2)")
        assert "KeyError: 'no such channel'" in faults[0] and "Traceback" in faults[0]
        transport.close()
        b.close()

    asyncio.run(main())


class _RecordingTransport:
    """Stands in for a socket transport: records each write, as one syscall each."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@pytest.mark.timeout(10)
def test_coalescing_protocol_sends_one_pass_of_frames_in_one_write() -> None:
    async def main() -> None:
        proto = FrameProtocol(lambda *f: None, lambda e: None, coalesce=True)
        transport = _RecordingTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        frames = [ipc.pack(Kind.REQUEST, n, b"{}") for n in (1, 2, 3)]
        for frame in frames:
            proto.write(frame)
        assert transport.writes == []  # held until the end of this pass of the loop
        await asyncio.sleep(0)
        assert transport.writes == [b"".join(frames)]
        # drain() and close() send what is held at once: back-pressure and shutdown see every byte.
        proto.write(frames[0])
        await proto.drain()
        assert transport.writes[-1] == frames[0]
        proto.write(frames[1])
        proto.close()
        assert transport.writes[-1] == frames[1] and transport.closed

    asyncio.run(main())


def test_plain_protocol_writes_at_once() -> None:
    proto = FrameProtocol(lambda *f: None, lambda e: None)
    transport = _RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.write(b"a")
    proto.write(b"b")
    assert transport.writes == [b"a", b"b"]


@pytest.mark.timeout(10)
def test_an_inbox_hands_items_over_in_order_and_a_cancelled_reader_loses_none() -> None:
    async def main() -> None:
        inbox = ipc.Inbox()
        inbox.put("a")
        inbox.put("b")
        assert [await inbox.get(), await inbox.get()] == ["a", "b"]
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)  # the reader is now waiting for an item
        inbox.put("c")
        assert await asyncio.wait_for(waiting, 5) == "c"
        cancelled = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        cancelled.cancel()
        inbox.put("d")  # arrives after its reader gave up: the next reader gets it
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await asyncio.wait_for(inbox.get(), 5) == "d"

    asyncio.run(main())


def test_a_busy_payload_keeps_a_request_id_with_spaces_apart_from_method_and_path() -> None:
    payload = ipc.busy_payload("my id 7", "POST", b"/functions/v1/hello/a%20b?x=1")
    assert ipc.read_busy(payload) == ("my id 7", "POST", "/functions/v1/hello/a b")


def test_a_lent_fd_arrives_with_its_message_and_is_not_inherited_by_children() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        ipc.send_lend(left, {"channel": 3}, w)
        payload, fd = ipc.receive_lend(right)
        assert ipc.loads(payload) == {"channel": 3} and fd is not None
        assert not os.get_inheritable(fd)
        os.write(fd, b"ok")
        os.close(fd)
        assert os.read(r, 2) == b"ok"
    finally:
        for end in (left, right):
            end.close()
        os.close(r)
        os.close(w)
