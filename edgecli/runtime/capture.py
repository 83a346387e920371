"""Turn what a function prints or logs into `log` events tagged with its request or task.

`sys.stdout`/`sys.stderr` are replaced by writers that send one event per printed line, tagged with the
request/task that printed it; continuation lines (a traceback printed line by line, indented output)
stay with the line they continue, so a traceback is one event, rendered once.
`logging` gets a root handler doing the same with the record's level. Raw writes to fd 1/2 do not come
here: the host reads those from pipes (see host/supervisor.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import threading
from typing import Any

from edgecli.runtime import report
from edgecli.runtime.tasks import format_exception

Key = tuple[str | None, str | None]


class LineWriter(io.TextIOBase):
    """A text stream whose complete lines become log events at `level`."""

    def __init__(self, level: str, fileno: int, loop: asyncio.AbstractEventLoop) -> None:
        self.level = level
        self._fileno = fileno
        self._loop = loop
        self._lock = threading.Lock()
        self._partial: dict[Key, str] = {}
        self._lines: dict[Key, list[str]] = {}
        self._scheduled = False

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
            buf = self._partial.pop(key, "") + text
            if "\n" in buf:
                done, _, rest = buf.rpartition("\n")
                self._lines.setdefault(key, []).append(done)
                if rest:
                    self._partial[key] = rest
                self._schedule()
            elif buf:
                self._partial[key] = buf
        return len(text)

    def flush(self) -> None:
        # An explicit flush (print(..., flush=True), a prompt without newline) sends partial lines too.
        with self._lock:
            for key, rest in self._partial.items():
                self._lines.setdefault(key, []).append(rest)
            self._partial.clear()
        self.send_pending()

    def _schedule(self) -> None:
        # Coalesce every write of one loop iteration: a traceback written line by line is one event.
        if self._scheduled:
            return
        self._scheduled = True
        try:
            if threading.current_thread() is threading.main_thread():
                self._loop.call_soon(self.send_pending)
            else:
                self._loop.call_soon_threadsafe(self.send_pending)
        except RuntimeError:  # the loop is closed: we are exiting; send now
            self._scheduled = False
            self._send_now()

    def send_pending(self) -> None:
        with self._lock:
            self._scheduled = False
        self._send_now()

    def _send_now(self) -> None:
        with self._lock:
            batches, self._lines = self._lines, {}
        for (request, task), chunks in batches.items():
            for message in group_lines("\n".join(chunks).split("\n")):
                report.reporter.emit("log", message, self.level, request=request, task=task)


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
    """Root logging handler: one `log` event per record, at the record's level."""

    LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}\n{format_exception(record.exc_info[1])}"
            level = self.LEVELS.get(record.levelno, "error" if record.levelno > logging.WARNING else "debug")
            report.reporter.log(message, level, logger=record.name)
        except Exception:
            self.handleError(record)


def install(loop: asyncio.AbstractEventLoop) -> tuple[LineWriter, LineWriter]:
    out = LineWriter("info", 1, loop)
    err = LineWriter("error", 2, loop)
    sys.stdout = out
    sys.stderr = err
    root = logging.getLogger()
    root.handlers[:] = [EventHandler()]
    # Like console.log on Supabase, info is shown by default; debug only when the function asks for it.
    root.setLevel(logging.INFO)
    return out, err


def flush_all(*writers: Any) -> None:
    for writer in writers:
        writer.flush()
