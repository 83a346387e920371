"""A transport wrapper that sends the writes of one event-loop pass as one write.

Used on both sides of serve: by the host's and the worker's frame protocol (edgecli/ipc.py), where under
load one pass opens or answers many requests, and by serve's HTTP protocol (edgecli/http_protocol.py), where
uvicorn writes a response's head and body separately. One syscall instead of several is a large part of
the per-request cost on loopback. Nothing waits longer than the current pass.
"""

from __future__ import annotations

import asyncio
from typing import Any


class PassBatchingTransport:
    """Holds writes until the end of the loop's current pass; everything else is the real transport's."""

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
        # The peer may have gone within this pass: the bytes are dropped, as a closed transport drops
        # them (uvloop would raise instead, from a callback nobody awaits).
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, set_write_buffer_limits...: the real transport's own.
        return getattr(self._transport, name)
