"""serve's side of the event store: each event's row goes, batched, down a pipe to the store's process.

`StoreFeed` is the EventSink serve hands its events to (edgecli/store_process.py explains why the
writing happens in a process of its own). On serve's loop, `emit` only appends the event's row
(a worker's event already arrived as its row; serve's own are encoded here, ~3 µs) and the rows of the
next FEED_INTERVAL_S leave in one write. A full pipe never blocks the loop: the rest waits here and
goes when the pipe drains — delayed, never dropped. `close()` sends everything, closes the pipe and
waits for the store process to finish writing. One thread only: serve's, which runs no other (every
event is emitted on its loop, or before the loop starts / after it ends).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from edgecli.events import Event
from edgecli.store import connect_store

FEED_INTERVAL_S = 0.01  # rows wait at most this long in serve: one write per interval, not per event
CLOSE_TIMEOUT_S = 30.0  # for the store process to write what it still holds once serve stops
F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe holds a burst's worth of rows; elsewhere the default
PIPE_SIZE = 1 << 20


class StoreFeed:
    def __init__(self, path: Path, retention: int) -> None:
        # Create (or check) the store here, so a file that is not an edgecli store stops serve at start
        # with a clear error (EdgecliError), not in the store process later.
        path.parent.mkdir(parents=True, exist_ok=True)
        connect_store(path, create=True).close()
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecli.store_process", str(path), str(retention)],
            stdin=subprocess.PIPE,
            # Out of serve's process group: the Ctrl-C (or `timeout`'s SIGTERM) sent to the group is
            # serve's to handle; the store stops when serve closes the pipe, rows all written.
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self._pipe = self.proc.stdin
        self._fd = self._pipe.fileno()
        _enlarge(self._fd)
        os.set_blocking(self._fd, False)
        self._rows: list[bytes] = []  # not yet written, in order
        self._unsent: deque[memoryview] = deque()  # written only in part: the pipe was full
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    def emit(self, event: Event) -> None:
        if self._lost:
            return
        self._rows.append(event.row_json or event.to_row_json())
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
        if not self._rows or self._lost:
            return
        rows, self._rows = self._rows, []
        rows.append(b"")  # every row ends with a newline
        self._unsent.append(memoryview(b"\n".join(rows)))
        if len(self._unsent) == 1:
            self._send()

    def _send(self) -> None:
        while self._unsent:
            chunk = self._unsent[0]
            try:
                written = os.write(self._fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # the store process is gone
                self._gone(exc)
                return
            if written < len(chunk):
                self._unsent[0] = chunk[written:]
                self._wait_writable()
                return
            self._unsent.popleft()
        if self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _wait_writable(self) -> None:
        if self._loop is None:  # off the loop: there is nothing else to do than wait for the pipe
            os.set_blocking(self._fd, True)
            try:
                self._send()
            finally:
                os.set_blocking(self._fd, False)
            return
        self._loop.add_writer(self._fd, self._send)

    def _gone(self, exc: OSError) -> None:
        self._lost = True
        self._rows.clear()
        self._unsent.clear()
        if self._loop is not None:
            self._loop.remove_writer(self._fd)
        code = self.proc.poll()
        print(
            f"edgecli: the event store process stopped ({exc.strerror or exc}; exit status {code}). Serving "
            "goes on, but `edgecli logs` and `edgecli tasks` miss what happens from now on: restart "
            "`edgecli serve` to record events again.",
            file=sys.__stderr__,
            flush=True,
        )

    def close(self) -> None:
        """Send every row, close the pipe (the store process sees EOF) and wait for it to finish."""
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is not None and not self._lost:
            self._loop.remove_writer(self._fd)
        self._loop = None  # from here on, writes wait for the pipe
        self.flush()
        if self._unsent:
            self._wait_writable()
        try:
            self._pipe.close()
        except OSError:
            pass
        try:
            self.proc.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # no process outlives serve, even a store stuck on a dead disk
            self.proc.wait()


def _enlarge(fd: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import fcntl

            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: keep the default
            pass
