"""Turn what a function prints or logs into `log` events tagged with its request or task.

`sys.stdout`/`sys.stderr` are replaced by writers that send one event per `print` call (what was
written up to a write that ends a line), tagged with the request/task that printed it; `logging` gets
a root handler doing the same with the record's level.

A record leaves for the host before the call that wrote it returns: a worker killed right after a
`print` (a limit, a segfault) has lost nothing it printed, and a function that prints faster than
serve can take blocks in `print` (back-pressure) instead of buffering without bound. One exception:
while the loop's transport holds bytes it has yet to send (a large response body in flight), a record
waits behind them in the worker's memory, so that the order on the wire stays the order of events; a
worker killed before they leave loses it. What waits so is bounded (QUEUED_MAX): past it, records are
dropped and counted, and the next record that gets through follows a warning saying how many. Messages are
capped, and a flood is paced (edgecli/log_limits.py). A traceback printed chunk by chunk
(`traceback.print_exc`) is held until a chunk that does not continue it, or the end of the loop's
pass, so that it is one event.
Raw writes to fd 1/2 do not come here: serve reads those from pipes (see host/output.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from edgecli import events, ipc
from edgecli.events import Event, Level
from edgecli.ipc import Kind
from edgecli.log_limits import MAX_MESSAGE, Budget, cost, truncate
from edgecli.runtime import report
from edgecli.runtime.tasks import format_exception

Key = tuple[str | None, str | None]
THREAD_WAIT_S = 1.0  # a printing thread waits this long at most for the loop to take its line
QUEUED_MAX = 4 * ipc.HIGH_WATER  # unsent bytes in the loop's transport past which records are dropped


class Outlet:
    """Sends log events to the host now, not at the end of the loop's pass, blocking while the socket
    is full. Frames the loop already holds go first, so the order on the wire is the order of events."""

    def __init__(self, proto: ipc.FrameProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self._proto = proto
        self._loop = loop
        self._main = threading.main_thread()
        self._budget = Budget()
        self._budget_lock = threading.Lock()
        self._stalled = False  # the loop did not take a thread's line in time, and has not run since
        self.dropped = 0  # records dropped while the transport held QUEUED_MAX, not yet reported
        self.writers: list[LineWriter] = []

    def send(self, event: Event, source: LineWriter | None = None) -> None:
        # A traceback another stream holds was written before this event: it leaves first.
        for writer in self.writers:
            if writer is not source and writer.holding:
                writer.send_held()
        frame = ipc.pack(Kind.EVENT, 0, event.to_row_json())
        with self._budget_lock:
            wait = self._budget.spend(cost(len(event.message)))
        if wait:
            time.sleep(wait)  # a flood goes on at the budget's pace, as if the socket were full
        if threading.current_thread() is self._main:
            self._write(frame)
            return
        # Another thread (a sync handler's): the socket is the loop's, so the loop writes the frame,
        # and this thread waits until it has, as a print on the loop's own thread would.
        done = threading.Event()
        try:
            self._loop.call_soon_threadsafe(self._write, frame, done)
        except RuntimeError:  # the loop is closed: the worker is leaving and nothing else writes
            self._write(frame)
            return
        # A loop blocked by the function (an async handler joining this very thread) holds each line
        # THREAD_WAIT_S once, not every line: until it runs again, later lines only queue.
        if not self._stalled and not done.wait(THREAD_WAIT_S):
            self._stalled = True

    def _write(self, frame: bytes, done: threading.Event | None = None) -> None:
        self._stalled = False
        try:
            proto = self._proto
            transport = proto.transport
            if proto.closed or transport is None or transport.is_closing():
                return
            proto.flush()
            queued = transport.get_write_buffer_size()
            if queued >= QUEUED_MAX:
                self.dropped += 1  # serve has not taken QUEUED_MAX in a while: memory stays bounded
                return
            if self.dropped:
                frame = self._dropped_marker() + frame
            if queued:
                # Bytes the transport has yet to send (a large response body): behind them, in order.
                proto.write(frame)
                return
            write_all(transport.get_extra_info("socket").fileno(), frame)
        finally:
            if done is not None:
                done.set()

    def _dropped_marker(self) -> bytes:
        count, self.dropped = self.dropped, 0
        message = (
            f"{count} log record{'s' if count != 1 else ''} dropped: the worker's socket to serve held "
            f"{QUEUED_MAX >> 20} MB not yet sent"
        )
        return ipc.pack(
            Kind.EVENT, 0, events.log(message, "warning", **report.reporter.current()).to_row_json()
        )


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the non-blocking `fd`, waiting while it is full; give up if the peer left."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return  # the host is gone; the connection's loss ends the worker


@dataclass(slots=True)
class Partial:
    """The start of a line not yet ended, and how long the whole of it is."""

    text: str
    size: int


class LineWriter(io.TextIOBase):
    """A text stream: each write that ends a line sends what was written up to it as one log event."""

    def __init__(self, level: Level, fileno: int, outlet: Outlet, loop: asyncio.AbstractEventLoop) -> None:
        self.level = level
        self._fileno = fileno
        self._outlet = outlet
        self._loop = loop
        self._lock = threading.Lock()
        self._partial: dict[Key, Partial] = {}
        self._held: dict[Key, str] = {}  # a traceback that the next write may continue
        self._scheduled = False
        outlet.writers.append(self)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fileno

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        key = (report.current_request.get(), report.current_task.get())
        with self._lock:
            ended = self._end_lines(key, text)
            ready = self._hold_or_release(key, ended) if ended is not None else []
        self._send(key, ready)
        return len(text)

    def _end_lines(self, key: Key, text: str) -> str | None:
        """Add `text` to `key`'s pending text; the message it ends, capped, if it ends one.

        A record ends with a write that ends a line: `print("a\\nb")` writes "a\\nb" then "\\n", and is one
        record, as one print call should be."""
        partial = self._partial.pop(key, None)
        head, size = (partial.text, partial.size) if partial is not None else ("", 0)
        if not text.endswith("\n"):
            if text or partial is not None:
                # Only the start is kept: text without end is bounded in memory too.
                self._partial[key] = Partial((head + text)[: MAX_MESSAGE + 1], size + len(text))
            return None
        return truncate((head + text[:-1])[: MAX_MESSAGE + 1], size + len(text) - 1)

    def _hold_or_release(self, key: Key, message: str) -> list[str]:
        """The messages to send now: a traceback is held while later writes may still continue it."""
        ready = []
        held = self._held.pop(key, None)
        if held is not None:
            joined = f"{held}\n{message}"
            if len(joined) <= MAX_MESSAGE and len(group_lines(joined.split("\n"))) == 1:
                message = joined
            else:
                ready.append(held)
        if message.startswith(TRACEBACK) and len(message) <= MAX_MESSAGE:
            self._held[key] = message
            self._schedule()
        else:
            ready.append(message)
        return ready

    def _send(self, key: Key, messages: list[str]) -> None:
        request, task = key
        for message in messages:
            event = events.log(message, self.level, **report.reporter.context(request=request, task=task))
            self._outlet.send(event, self)

    def flush(self) -> None:
        # An explicit flush (print(..., flush=True), a prompt without newline) sends partial lines too.
        with self._lock:
            pending: dict[Key, list[str]] = {}
            for key, held in self._held.items():
                pending.setdefault(key, []).append(held)
            for key, partial in self._partial.items():
                pending.setdefault(key, []).append(truncate(partial.text, partial.size))
            self._held.clear()
            self._partial.clear()
        for key, messages in pending.items():
            self._send(key, messages)

    def _schedule(self) -> None:
        # A held traceback leaves at the end of this pass of the loop at the latest.
        if self._scheduled:
            return
        self._scheduled = True
        try:
            if threading.current_thread() is threading.main_thread():
                self._loop.call_soon(self.send_held)
            else:
                self._loop.call_soon_threadsafe(self.send_held)
        except RuntimeError:  # the loop is closed: we are exiting; flush_all sends what is held
            self._scheduled = False

    def send_held(self) -> None:
        with self._lock:
            self._scheduled = False
            held, self._held = self._held, {}
        for key, message in held.items():
            self._send(key, [message])


TRACEBACK = "Traceback (most recent call last):"
CLOSERS = ("}", "]", ")")  # the last line of indented JSON or a pretty-printed structure
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def group_lines(lines: list[str]) -> list[str]:
    """One message per printed line, except that continuation lines join the line they continue.

    Continuations are indented lines (a traceback's frames, pretty-printed data) with their closing
    bracket, and everything up to
    the closing `Error: message` line of a traceback, chained tracebacks included.
    """
    groups: list[list[str]] = []
    in_traceback = False  # inside a traceback, before its final unindented line
    for line in lines:
        indented = line[:1] in (" ", "\t") or line.rstrip(",") in CLOSERS
        after_traceback = bool(groups) and groups[-1][0].startswith(TRACEBACK)
        joins = bool(groups) and (
            indented
            or in_traceback
            or (after_traceback and (not line or line.startswith(CHAINED) or line.startswith(TRACEBACK)))
        )
        if joins:
            groups[-1].append(line)
            if in_traceback and not indented:
                in_traceback = False
            elif line.startswith(TRACEBACK):
                in_traceback = True
        else:
            groups.append([line])
            in_traceback = line.startswith(TRACEBACK)
    return ["\n".join(group) for group in groups]


class EventHandler(logging.Handler):
    """Root logging handler: one `log` event per record, at the record's level, sent at once."""

    LEVELS: dict[int, Level] = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}

    def __init__(self, outlet: Outlet) -> None:
        super().__init__()
        self._outlet = outlet

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}\n{format_exception(record.exc_info[1])}"
            level = self.LEVELS.get(record.levelno, "error" if record.levelno > logging.WARNING else "debug")
            event = events.log(truncate(message), level, logger=record.name, **report.reporter.current())
            self._outlet.send(event)
        except Exception:
            self.handleError(record)


def install(loop: asyncio.AbstractEventLoop, outlet: Outlet) -> tuple[LineWriter, LineWriter]:
    out = LineWriter("info", 1, outlet, loop)
    err = LineWriter("error", 2, outlet, loop)
    sys.stdout = out
    sys.stderr = err
    root = logging.getLogger()
    root.handlers[:] = [EventHandler(outlet)]
    # Like console.log on Supabase, info is shown by default; debug only when the function asks for it.
    root.setLevel(logging.INFO)
    return out, err


def flush_all(*writers: Any) -> None:
    for writer in writers:
        writer.flush()
