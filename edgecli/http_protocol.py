"""The HTTP/1.1 protocol serve and a worker serving a lent connection run: uvicorn's httptools protocol,
writing each response in one syscall.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`: two `send` syscalls per request. On loopback each costs about as much as
parsing the request, and the relay always sends the two back to back, so serve hands uvicorn a
transport that holds writes until the end of the event loop's current pass and then sends them as one.
Nothing waits longer than that pass: a streamed body still goes out chunk by chunk, and a response head
whose body is not there yet goes out alone.

The request head (request line and headers) is bounded, which bare uvicorn's httptools protocol does
not do: over MAX_HEAD bytes it is refused with 431, and a head still incomplete `head_timeout` seconds
after it began (or after the connection opened) ends the connection, with a 408 if part of it came.

It also tells the relay when a client leaves mid-request (`on_client_gone`), so that a request whose
body is all in needs no task of its own waiting in `receive()` just to notice that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import Enum
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from edgecli.answers import json_body, new_request_id, whole_response
from edgecli.batching import PassBatchingTransport
from edgecli.config.model import DEFAULT_HEAD_TIMEOUT_SEC

MAX_HEAD = 64 * 1024  # bytes of request line and headers: far above what clients send, and bounded

ON_CLIENT_GONE = "edgecli_on_client_gone"  # set by the relay on a request's cycle: called when it leaves


def on_client_gone(receive: Any, callback: Callable[[], None]) -> bool:
    """Have `callback` called when the client of the request `receive` belongs to goes away. False when
    `receive` is not this protocol's (another server, a test transport): the caller watches receive()."""
    cycle = getattr(receive, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return False
    setattr(cycle, ON_CLIENT_GONE, callback)
    return True


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing: the parser turns it into an HttpParserError."""


class Head(Enum):
    """Where the reading of a connection's next request head is."""

    WAITING = "waiting"  # none of it yet: the connection is new, or the last message has ended
    ARRIVING = "arriving"  # part of it has come, and its timer runs
    DONE = "done"  # it is parsed: the request's body and response are under way
    REFUSED = "refused"  # it grew past MAX_HEAD: the parser was stopped, 431 is due


class HeadBound:
    """The size bound on one request head at a time. Pure bookkeeping, fed by the protocol's reads and
    its parser's callbacks; the protocol acts on what it answers (431) and arms the head's timer.

    Two counts, since neither alone sees every head: what the parser handed over (the url and headers,
    one read holding a whole oversized head), and the reads a head did not end in (bytes the parser still
    buffers, a head trickling in)."""

    __slots__ = ("_ended_in_read", "_read_in_head", "parsed", "state", "unended")

    def __init__(self) -> None:
        self.state = Head.WAITING
        self.parsed = 0
        self.unended = 0
        self._read_in_head = False  # the current read began inside a head (or before one)
        self._ended_in_read = False  # a head ended inside the current read

    def read_begins(self) -> None:
        self._read_in_head = self.state in (Head.WAITING, Head.ARRIVING)
        self._ended_in_read = False

    def read_ends(self, size: int) -> bool:
        """Count a read no head ended in as head; True when that takes the head past MAX_HEAD. A read that
        began in a body is not counted, even if a head begins in it: the parser counts that head."""
        if not self._read_in_head or self._ended_in_read or self.state is Head.REFUSED:
            return False
        self.state = Head.ARRIVING
        self.unended += size
        if self.unended > MAX_HEAD:
            self.state = Head.REFUSED
            return True
        return False

    def message_begins(self) -> None:
        self.state = Head.ARRIVING

    def parsed_part(self, size: int) -> None:
        """The parser handed over `size` bytes of the head; HeadTooLarge stops it past MAX_HEAD."""
        self.parsed += size
        if self.parsed > MAX_HEAD:
            self.state = Head.REFUSED
            raise HeadTooLarge

    def head_ends(self) -> None:
        self.state = Head.DONE
        self.parsed = self.unended = 0
        self._ended_in_read = True

    def message_ends(self) -> None:
        self.state = Head.WAITING


INVALID = "Invalid HTTP request received."  # uvicorn's warning when its parser stops


class HeadLog:
    """uvicorn's logger for one connection, without the warning uvicorn prints when the head bound
    stopped its parser: that head was not invalid, and the protocol says what it was (431)."""

    def __init__(self, logger: logging.Logger, protocol: HttpProtocol) -> None:
        self.logger = logger
        self.protocol = protocol

    def __getattr__(self, name: str) -> Any:  # .level, .log, .error...: the logger's own
        return getattr(self.logger, name)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        if msg == INVALID and self.protocol.head.state is Head.REFUSED:
            return
        self.logger.warning(msg, *args, **kwargs)


def head_answer(status: int, code: str, message: str) -> bytes:
    """A whole response, for the protocol to write before any request exists."""
    return whole_response(status, code, json_body(code, message), new_request_id())


class HttpProtocol(HttpToolsProtocol):
    head_timeout: float = DEFAULT_HEAD_TIMEOUT_SEC  # 0: none; serve sets it with `bounded`
    # A connection this protocol takes over between two requests (one lent, or one given back): what was
    # read of its next request. None for a connection just accepted.
    held_bytes: bytes | None = None

    @classmethod
    def bounded(cls, head_timeout: float) -> type[HttpProtocol]:
        return type(cls.__name__, (cls,), {"head_timeout": head_timeout})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.logger = HeadLog(self.logger, self)  # type: ignore[assignment]
        super().connection_made(PassBatchingTransport(transport, self.loop))  # type: ignore[arg-type]
        self.head = HeadBound()
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()
        held, self.held_bytes = self.held_bytes, None
        if held:
            self.data_received(held)
        elif held is not None:  # idle between two requests: closed when idle as long as after a response
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def flush_writes(self) -> None:
        """Send what the transport holds for the end of this pass now."""
        batch = self.transport
        assert isinstance(batch, PassBatchingTransport)
        batch.flush()

    def between_requests(self) -> bool:
        """The last response is complete and nothing of a next request has been read."""
        cycle = self.cycle
        return (
            (cycle is None or cycle.response_complete)
            and self.head.state is Head.WAITING
            and not self.pipeline
            and not self.transport.is_closing()
        )

    def _arm_head_timer(self) -> None:
        if self.head_timeout > 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.head.state is Head.ARRIVING and (self.cycle is None or self.cycle.response_complete):
            message = (
                f"The request's headers did not arrive within {self.head_timeout:g} s: send them at once "
                "(serve's bound is [edge_runtime] request_head_timeout_sec in config.toml)."
            )
            self.transport.write(head_answer(408, "REQUEST_TIMEOUT", message))
        self.transport.close()

    def _refuse_head(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # else a response is going out: just close
            message = (
                f"The request's line and headers are larger than {MAX_HEAD // 1024} KB: send fewer or "
                "shorter headers (a large value belongs in the body)."
            )
            self.transport.write(head_answer(431, "REQUEST_HEADER_FIELDS_TOO_LARGE", message))
            self.logger.warning(f"Request line and headers over {MAX_HEAD // 1024} KB: answered 431.")
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.head.read_begins()
        super().data_received(data)
        if not self.transport.is_closing() and self.head.read_ends(len(data)):
            self._refuse_head()

    def send_400_response(self, msg: str) -> None:
        if self.head.state is Head.REFUSED:  # the parser stopped at HeadTooLarge
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        self.head.message_begins()
        super().on_message_begin()
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self.head.parsed_part(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.parsed_part(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head.head_ends()
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.head.message_ends()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        cycle = self.cycle
        left = cycle is not None and not cycle.response_complete
        super().connection_lost(exc)
        callback = getattr(cycle, ON_CLIENT_GONE, None) if left else None
        if callback is not None:
            callback()
