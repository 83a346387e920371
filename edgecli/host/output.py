"""Raw output of a worker (writes to fd 1/2 that bypass sys.stdout: C code, os.write, subprocesses).

Serve owns the read end of each pipe, so a worker can never block on its own output for long: a worker
writing faster than serve reads waits in `write` (the pipe is full), which bounds what either side holds.
Each line is one record, and a line longer than a record may be (edgecli/log_size.py) is split into
records at that size, so a flood without newlines costs serve one record's worth of memory.
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import Callable

from edgecli.log_size import MAX_MESSAGE

DRAIN_READS = 64  # reads of 64 KB at most when a worker is gone
Sink = Callable[[str, str], None]  # (text, level)


class PipeLines(asyncio.Protocol):
    def __init__(self, level: str, sink: Sink) -> None:
        self.level = level
        self.sink = sink
        # Bytes are decoded as they come: a character split across two reads is not replaced.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.partial = ""
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
        self._take(self._decoder.decode(data))

    def _take(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self._emit(line)
        while len(self.partial) >= MAX_MESSAGE:
            self.sink(self.partial[:MAX_MESSAGE], self.level)
            self.partial = self.partial[MAX_MESSAGE:]

    def _emit(self, line: str) -> None:
        for start in range(0, max(len(line), 1), MAX_MESSAGE):
            self.sink(line[start : start + MAX_MESSAGE], self.level)

    def eof_received(self) -> bool | None:
        self._take(self._decoder.decode(b"", final=True))
        if self.partial:
            self.sink(self.partial, self.level)
            self.partial = ""
        return None

    def close(self) -> None:
        """The worker is gone: what it wrote and serve has not read yet is still recorded."""
        if self.transport is None or self.transport.is_closing():
            return
        self._drain()
        self.eof_received()
        self.transport.close()

    def _drain(self) -> None:
        assert self.transport is not None
        pipe = self.transport.get_extra_info("pipe")
        if pipe is None:
            return
        # Bounded: a grandchild that holds the pipe open may still be writing.
        for _ in range(DRAIN_READS):
            try:
                data = os.read(pipe.fileno(), 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.data_received(data)
