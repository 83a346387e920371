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
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that batches the writes of one loop pass; everything else goes to the real one."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._transport.write(data)  # a closing transport drops it, as it would have dropped each part

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, set_protocol...: the real transport's own.
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
