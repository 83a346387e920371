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
from collections.abc import Callable
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
        super().connection_made(PassBatchingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_open = True  # between one message's end (or the connection's start) and the next head's
        self._head_parsed = 0  # bytes of the head the parser handed over (url, headers)
        self._head_chunks = 0  # bytes of reads the head had not ended by: the parts still in its buffer
        self._head_refused = False
        self._heads_done = 0
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
            and self._head_open
            and not (self._head_parsed or self._head_chunks)
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
        started = self._head_parsed or self._head_chunks
        if started and (self.cycle is None or self.cycle.response_complete):
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
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        whole = self._head_open  # this read starts inside a head...
        heads = self._heads_done
        super().data_received(data)
        # ...and none ended in it: all of it is head (a body in the same read is not)
        if whole and heads == self._heads_done and not self.transport.is_closing():
            self._head_chunks += len(data)
            if self._head_chunks > MAX_HEAD:
                self._refuse_head()

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:  # the parser stopped at HeadTooLarge
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > MAX_HEAD:
            self._head_refused = True
            raise HeadTooLarge

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._heads_done += 1
        self._head_parsed = self._head_chunks = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_open = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        cycle = self.cycle
        left = cycle is not None and not cycle.response_complete
        super().connection_lost(exc)
        callback = getattr(cycle, ON_CLIENT_GONE, None) if left else None
        if callback is not None:
            callback()
