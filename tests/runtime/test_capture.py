"""What a function prints becomes records, in-process: one per print, capped, tracebacks kept whole."""

from __future__ import annotations

import asyncio
import socket
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from edgecli import ipc
from edgecli.events import Event
from edgecli.host.output import PipeLines
from edgecli.log_limits import MAX_MESSAGE, truncate
from edgecli.runtime import capture, report

pytestmark = pytest.mark.timeout(20)


class FakeOutlet(capture.Outlet):
    """Records what would go on the wire, and the order it went in."""

    def __init__(self) -> None:
        self.writers = []
        self.sent: list[Event] = []

    def send(self, event: Event, source: Any = None) -> None:
        for writer in self.writers:
            if writer is not source and writer.holding:
                writer.send_held()
        self.sent.append(event)


@pytest.fixture
def outlet() -> Iterator[FakeOutlet]:
    yield FakeOutlet()


def writers(outlet: FakeOutlet) -> tuple[capture.LineWriter, capture.LineWriter]:
    loop = asyncio.new_event_loop()
    return capture.LineWriter("info", 1, outlet, loop), capture.LineWriter("error", 2, outlet, loop)


def messages(outlet: FakeOutlet) -> list[str]:
    return [e.message for e in outlet.sent]


def test_each_print_is_one_record_sent_before_print_returns(outlet: FakeOutlet) -> None:
    out, _ = writers(outlet)
    print("one", file=out)
    assert messages(outlet) == ["one"]  # already sent: nothing waits for the loop
    print("two\nlines", file=out)
    out.write("no end yet")
    assert messages(outlet) == ["one", "two\nlines"]
    out.write(", now\n")
    assert messages(outlet) == ["one", "two\nlines", "no end yet, now"]


def test_a_long_record_is_cut_with_a_marker_giving_its_size(outlet: FakeOutlet) -> None:
    out, _ = writers(outlet)
    print("y" * 10_000_000, file=out)
    (message,) = messages(outlet)
    assert message.startswith("y" * MAX_MESSAGE)
    assert message.endswith("… [truncated: 10,000,000 characters]")
    assert len(message) < MAX_MESSAGE + 50


def test_a_line_without_end_is_held_only_up_to_the_cap(outlet: FakeOutlet) -> None:
    out, _ = writers(outlet)
    for _ in range(1000):
        out.write("z" * 1000)  # a million characters, no newline
    partial = out._partial[(None, None)]
    assert len(partial.text) <= MAX_MESSAGE + 1 and partial.size == 1_000_000
    out.flush()
    assert messages(outlet) == [truncate("z" * 1_000_000)]


def test_a_printed_traceback_is_one_record_and_keeps_its_place(outlet: FakeOutlet) -> None:
    out, err = writers(outlet)
    try:
        raise ValueError("boom")
    except ValueError:
        traceback.print_exc(file=err)
    print("after", file=out)
    assert len(outlet.sent) == 2
    first, second = outlet.sent
    assert first.message.startswith("Traceback") and first.message.endswith("ValueError: boom")
    assert first.level == "error" and second.message == "after"


def test_records_carry_the_request_and_task_that_printed_them(outlet: FakeOutlet) -> None:
    out, _ = writers(outlet)
    token = report.current_request.set("req-1")
    try:
        print("in a request", file=out)
    finally:
        report.current_request.reset(token)
    assert outlet.sent[0].request == "req-1"


def test_logging_records_are_capped_too(outlet: FakeOutlet) -> None:
    import logging

    handler = capture.EventHandler(outlet)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "w" * 20_000, None, None)
    handler.emit(record)
    (event,) = outlet.sent
    assert event.level == "warning" and "truncated: 20,000 characters" in event.message


def pipe_records(*chunks: bytes) -> list[str]:
    got: list[str] = []
    proto = PipeLines("info", lambda text, level: got.append(text))
    for chunk in chunks:
        proto.data_received(chunk)
    proto.eof_received()
    return got


def test_raw_output_is_one_record_per_line_split_at_the_cap() -> None:
    assert pipe_records(b"a\nb\n", b"c") == ["a", "b", "c"]
    flood = pipe_records(b"z" * (2 * MAX_MESSAGE + 5))
    assert [len(r) for r in flood] == [MAX_MESSAGE, MAX_MESSAGE, 5]
    # A character split across two reads is decoded whole, not replaced.
    euro = "€".encode()
    assert pipe_records(b"price " + euro[:1], euro[1:] + b"\n") == ["price €"]


def test_writer_refuses_bytes(outlet: FakeOutlet) -> None:
    out, _ = writers(outlet)
    with pytest.raises(TypeError):
        out.write(b"bytes")  # type: ignore[arg-type]
    assert sys.stdout is not out


class BackedUpTransport:
    """A transport holding `queued` unsent bytes; what the socket takes goes to `sock`."""

    def __init__(self, sock: socket.socket) -> None:
        self.queued = 0
        self.sock = sock

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return self.sock


class BackedUpProtocol:
    closed = False

    def __init__(self, transport: BackedUpTransport) -> None:
        self.transport = transport
        self.behind: list[bytes] = []  # frames written behind the transport's unsent bytes

    def flush(self) -> None:
        pass

    def write(self, frame: bytes) -> None:
        self.behind.append(frame)


def wire_messages(data: bytes) -> list[str]:
    return [Event.from_row_json(payload).message for _k, _f, _c, payload in ipc.FrameParser().feed(data)]


def test_records_behind_a_backed_up_transport_are_bounded_and_a_drop_is_counted() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = asyncio.new_event_loop()
    try:
        transport = BackedUpTransport(ours)
        proto = BackedUpProtocol(transport)
        outlet = capture.Outlet(proto, loop)  # type: ignore[arg-type]
        out = capture.LineWriter("info", 1, outlet, loop)
        print("straight to the socket", file=out)
        transport.queued = 1000
        print("behind the body", file=out)
        assert wire_messages(b"".join(proto.behind)) == ["behind the body"]  # in order, behind it
        transport.queued = capture.QUEUED_MAX
        for _ in range(3):
            print("serve is not reading", file=out)  # returns: dropped, not queued without bound
        assert len(proto.behind) == 1 and outlet.dropped == 3
        transport.queued = 0
        print("drained", file=out)
        received = wire_messages(theirs.recv(1 << 16))
        assert received[0] == "straight to the socket"
        assert received[1].startswith("3 log records dropped: the worker's socket to serve held")
        assert received[2] == "drained" and outlet.dropped == 0
    finally:
        loop.close()
        ours.close()
        theirs.close()
