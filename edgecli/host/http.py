"""The HTTP/1.1 protocol serve runs: uvicorn's httptools protocol, writing each response in one syscall.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`: two `send` syscalls per request. On loopback each costs about as much as
parsing the request, and the relay always sends the two back to back, so serve hands uvicorn a
transport that holds writes until the end of the event loop's current pass and then sends them as one.
Nothing waits longer than that pass: a streamed body still goes out chunk by chunk, and a response head
whose body is not there yet goes out alone.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgecli.batching import PassBatchingTransport


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(PassBatchingTransport(transport, self.loop))  # type: ignore[arg-type]
