"""The HTTP/1.1 protocol serve runs: uvicorn's httptools protocol, writing each response in one syscall.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`: two `send` syscalls per request. On loopback each costs about as much as
parsing the request, and the relay always sends the two back to back, so serve hands uvicorn a
transport that holds writes until the end of the event loop's current pass and then sends them as one.
Nothing waits longer than that pass: a streamed body still goes out chunk by chunk, and a response head
whose body is not there yet goes out alone.

It also tells the relay when a client leaves mid-request (`on_client_gone`), so that a request whose
body is all in needs no task of its own waiting in `receive()` just to notice that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from edgecli.batching import PassBatchingTransport

ON_CLIENT_GONE = "edgecli_on_client_gone"  # set by the relay on a request's cycle: called when it leaves


def on_client_gone(receive: Any, callback: Callable[[], None]) -> bool:
    """Have `callback` called when the client of the request `receive` belongs to goes away. False when
    `receive` is not this protocol's (another server, a test transport): the caller watches receive()."""
    cycle = getattr(receive, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return False
    setattr(cycle, ON_CLIENT_GONE, callback)
    return True


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(PassBatchingTransport(transport, self.loop))  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        left = cycle is not None and not cycle.response_complete
        super().connection_lost(exc)
        callback = getattr(cycle, ON_CLIENT_GONE, None) if left else None
        if callback is not None:
            callback()
