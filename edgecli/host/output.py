"""Raw output of a worker (writes to fd 1/2 that bypass sys.stdout: C code, os.write, subprocesses).

Serve owns the read end of each pipe, so a worker can never block on its own output for long: a worker
writing faster than serve reads waits in `write` (the pipe is full), which bounds what either side holds.
Each line is one record, and a line longer than a record may be (edgecli/log_limits.py) is split into
records at that size, so a flood without newlines costs serve one record's worth of memory here.
A pipe is read within a worker's record budget (edgecli/log_limits.py; reading pauses, the worker's
writes wait): one function dumping megabytes to fd 1 would otherwise take serve's loop, and the store
behind it, from every other function, and pile up in serve faster than the store writes it.
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import Callable

from edgecli.log_limits import MAX_MESSAGE, Budget, cost

DRAIN_READS = 64  # reads of 64 KB at most when a worker is gone
Sink = Callable[[str, str], None]  # (text, level)


class PipeLines(asyncio.Protocol):
    def __init__(self, level: str, sink: Sink) -> None:
        self.level = level
        self.sink = sink
        # Bytes are decoded as they come: a character split across two reads is not replaced.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.partial = ""
        self.transport: asyncio.ReadTransport | None = None
        self._budget = Budget()
        self._paused = False

    @classmethod
    async def attach(cls, fd: int, level: str, sink: Sink) -> PipeLines:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "rb", buffering=0)
        _, proto = await loop.connect_read_pipe(lambda: cls(level, sink), pipe)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a read pipe's transport

    def data_received(self, data: bytes) -> None:
        records = self._take(self._decoder.decode(data))
        wait = self._budget.spend(records + cost(len(data)) - 1)
        if wait and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(wait, self._resume)

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _take(self, text: str) -> int:
        """Send the records `text` completes; how many."""
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        records = sum(self._emit(line) for line in lines)
        while len(self.partial) >= MAX_MESSAGE:
            self.sink(self.partial[:MAX_MESSAGE], self.level)
            self.partial = self.partial[MAX_MESSAGE:]
            records += 1
        return records

    def _emit(self, line: str) -> int:
        starts = range(0, max(len(line), 1), MAX_MESSAGE)
        for start in starts:
            self.sink(line[start : start + MAX_MESSAGE], self.level)
        return len(starts)

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

    def read_now(self) -> None:
        """Take in what the pipe holds now (one read), unless reading is paused for the budget: output a
        request's handler wrote is then recorded before the request's end is."""
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self._drain(1)

    def _drain(self, reads: int = DRAIN_READS) -> None:
        assert self.transport is not None
        pipe = self.transport.get_extra_info("pipe")
        if pipe is None:
            return
        # Bounded: a grandchild that holds the pipe open may still be writing.
        for _ in range(reads):
            try:
                data = os.read(pipe.fileno(), 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.data_received(data)
