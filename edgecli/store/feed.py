"""serve's side of the event store: every event's row goes, batched, down a pipe to the store process.

`StoreFeed` is the EventSink serve hands its events to (edgecli/store/writer.py is the process at the
other end). On serve's loop `emit` only appends the event's row (a worker's event arrived as its row;
serve's own are encoded here), and the rows of the next FEED_INTERVAL_S leave in one write. A full
pipe never blocks the loop: the rest waits here and goes when the pipe drains. A store process that
died is started again (not sooner than RESTART_AFTER_S after the last start); what arrives meanwhile
waits here too. What waits is bounded (HOLD_BYTES): past that the oldest rows are dropped, counted,
and reported. Rows the dead process had read but not committed are lost with it. One thread only:
serve's (every event is emitted on its loop, or before the loop starts / after it ends).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from edgecli.events import Event
from edgecli.store.schema import open_writer

FEED_INTERVAL_S = 0.01  # rows wait at most this long in serve: one write per interval, not per event
CLOSE_TIMEOUT_S = 30.0  # for the store process to write what it still holds once serve stops
RESTART_AFTER_S = 1.0  # a store process that dies this soon after starting waits this long for the next
HOLD_BYTES = 64 << 20  # rows waiting for the pipe or for a new store process, at most
F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe holds a burst's worth of rows; elsewhere the default
PIPE_SIZE = 1 << 20


class StoreFeed:
    def __init__(self, path: Path, retention: int, retention_mb: float) -> None:
        # Create (or check) the store here, so a file that is not an edgecli store stops serve at start
        # with a clear error (StoreError), not in the store process later.
        open_writer(path).close()
        self.path = path
        self._args = [str(path), str(retention), str(retention_mb)]
        self._rows: list[bytes] = []  # emitted, not yet joined into a write
        self._unsent: deque[memoryview] = deque()  # joined, waiting for the pipe (or a new process)
        self._unsent_bytes = 0
        self._head_started = False  # the first of _unsent went into the pipe in part
        self.dropped = 0  # events dropped because too much waited
        self.restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        self._fd: int | None = None
        self.proc = self._start()

    def emit(self, event: Event) -> None:
        self._rows.append(event.to_row_json())
        if self._timer is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not on serve's loop (start-up, shutdown): write now
            self.flush()
            return
        self._timer = self._loop.call_later(FEED_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Write the rows emitted so far, as much as the pipe takes now; the rest follows when it drains."""
        self._timer = None
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        rows.append(b"")  # every row ends with a newline
        chunk = memoryview(b"\n".join(rows))
        self._unsent.append(chunk)
        self._unsent_bytes += len(chunk)
        if self._unsent_bytes > HOLD_BYTES:
            self._drop_oldest()
        if self._fd is None:
            self._restart_when_due()
        elif len(self._unsent) == 1:
            self._send()

    def close(self) -> None:
        """Send every row, close the pipe (the store process sees EOF) and wait for it to finish."""
        for timer in (self._timer, self._restart_timer):
            if timer is not None:
                timer.cancel()
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)
        self._loop = None  # from here on, writes wait for the pipe
        self.flush()
        if self._unsent and self._fd is None:
            self._restart()  # one last try for what waited: once only, whenever it died
        if self._unsent and self._fd is not None:
            self._wait_writable()
        self._close_pipe()
        if self.dropped:
            _say(f"edgecli: {self.dropped} events were dropped while too many waited for the event store.")
        try:
            self.proc.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # no process outlives serve, even a store stuck on a dead disk
            self.proc.wait()

    def _start(self) -> subprocess.Popen[bytes]:
        self._started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgecli.store.writer", *self._args],
            stdin=subprocess.PIPE,
            # Out of serve's process group: the Ctrl-C (or `timeout`'s SIGTERM) sent to the group is
            # serve's to handle; the store stops when serve closes the pipe, rows all written.
            start_new_session=True,
        )
        assert proc.stdin is not None
        self._fd = proc.stdin.fileno()
        _enlarge(self._fd)
        os.set_blocking(self._fd, False)
        return proc

    def _send(self) -> None:
        while self._unsent and self._fd is not None:
            chunk = self._unsent[0]
            try:
                written = os.write(self._fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # the store process is gone
                self._lost(exc)
                return
            self._unsent_bytes -= written
            if written < len(chunk):
                self._unsent[0] = chunk[written:]
                self._head_started = self._head_started or written > 0
                self._wait_writable()
                return
            self._unsent.popleft()
            self._head_started = False
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _wait_writable(self) -> None:
        assert self._fd is not None
        if self._loop is None:  # off the loop: there is nothing else to do than wait for the pipe
            os.set_blocking(self._fd, True)
            try:
                self._send()
            finally:
                if self._fd is not None:
                    os.set_blocking(self._fd, False)
            return
        self._loop.add_writer(self._fd, self._send)

    def _lost(self, exc: OSError) -> None:
        """The store process died: keep what waits, and start a new one (now, or when due)."""
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)
        self._close_pipe()
        if self._head_started:  # the new process must not begin in the middle of a row
            head = self._unsent.popleft()
            cut = bytes(head).find(b"\n") + 1
            self._unsent_bytes -= len(head)
            if cut and cut < len(head):
                self._unsent.appendleft(head[cut:])
                self._unsent_bytes += len(head) - cut
            self._head_started = False
        code = _exit_status(self.proc)
        _say(
            f"edgecli: the event store process stopped ({exc.strerror or exc}; exit status {code}). "
            "Serving goes on; a new one starts, and the events of the meantime are written then."
        )
        self._restart_when_due()

    def _restart_when_due(self) -> None:
        wait = self._started + RESTART_AFTER_S - time.monotonic()
        if wait <= 0:
            self._restart()
        elif self._loop is None:  # off the loop, no timer: a process that dies at once is given up on
            self.dropped += sum(bytes(chunk).count(b"\n") for chunk in self._unsent)
            self._unsent.clear()
            self._unsent_bytes = 0
            _say(f"edgecli: {self.dropped} events were dropped: the event store process keeps stopping.")
        elif self._restart_timer is None:
            self._restart_timer = self._loop.call_later(wait, self._restart)

    def _restart(self) -> None:
        self._restart_timer = None
        if self._fd is not None:
            return
        _exit_status(self.proc)  # reaped: no zombie while serve runs
        self.proc = self._start()
        self.restarts += 1
        if self.dropped:
            _say(f"edgecli: {self.dropped} events were dropped while the event store process was down.")
            self.dropped = 0
        self._send()

    def _drop_oldest(self) -> None:
        """Drop whole writes, oldest first (but one the pipe took part of), until what waits fits."""
        keep_head = self._head_started
        if not self.dropped:
            _say(
                f"edgecli: more than {HOLD_BYTES >> 20} MB of events are waiting for the event store; the "
                "oldest are dropped until it catches up (serving goes on)."
            )
        while self._unsent_bytes > HOLD_BYTES and len(self._unsent) > 1 + keep_head:
            index = 1 if keep_head else 0
            chunk = self._unsent[index]
            del self._unsent[index]
            self._unsent_bytes -= len(chunk)
            self.dropped += bytes(chunk).count(b"\n")

    def _close_pipe(self) -> None:
        if self._fd is None:
            return
        self._fd = None
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def _exit_status(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return proc.wait(1.0)
    except subprocess.TimeoutExpired:
        return None


def _say(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


def _enlarge(fd: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import fcntl

            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: keep the default
            pass
