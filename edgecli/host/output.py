"""Raw output of a worker (writes to fd 1/2 that bypass sys.stdout: C code, os.write, subprocesses).

The host owns the read end of each pipe, so a worker can never block on its own output. Lines that
arrive together are sent as one message, so a multi-line dump is one event.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

Sink = Callable[[str, str], None]  # (text, level)


class PipeLines(asyncio.Protocol):
    def __init__(self, level: str, sink: Sink) -> None:
        self.level = level
        self.sink = sink
        self.partial = b""
        self.transport: asyncio.BaseTransport | None = None

    @classmethod
    async def attach(cls, fd: int, level: str, sink: Sink) -> PipeLines:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "rb", buffering=0)
        _, proto = await loop.connect_read_pipe(lambda: cls(level, sink), pipe)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        data = self.partial + data
        done, newline, self.partial = data.rpartition(b"\n")
        if newline:
            self.sink(done.decode("utf-8", "replace"), self.level)

    def eof_received(self) -> bool | None:
        if self.partial:
            self.sink(self.partial.decode("utf-8", "replace"), self.level)
            self.partial = b""
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
