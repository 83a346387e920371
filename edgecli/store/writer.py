"""The event store's writer: the process every `edgecli serve` runs to put its events in the store.

    python -m edgecli.store.writer DB_PATH RETENTION RETENTION_MB

One loop, one thread: read what serve sent down the pipe (event rows in JSON, one a line, as
`Event.to_row_json()` writes them) → one INSERT of those rows → commit, at most one commit per
COMMIT_EVERY_S: what arrives meanwhile waits for the next, which is then larger. Any number of these
processes may write one store: SQLite numbers the rows. A process of its own, not a thread in serve,
because whatever Python a thread runs holds serve's event loop up; it runs at idle priority, and
ignores SIGINT and SIGTERM (they reach serve's whole process group): it stops on EOF, once serve
closed the pipe or died, after writing every row it read.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecli.events import ROW_LENGTH
from edgecli.store.schema import FileId, StoreError, file_id, open_writer, restrict

READ_SIZE = 1 << 20
COMMIT_EVERY_S = 0.1  # under load, one commit per this long (see pump)
REOPEN_EVERY_S = 1.0  # an unusable store file is tried again this often while events arrive
TRIM_TO = 0.9  # past the size limit, trim to this share of it, so trims do not follow every batch
_INSERT = (
    "INSERT INTO events (ts, kind, function, worker, request, task, level, message, extra) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BOUNDS = "SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)"
_ESCAPED_SURROGATE = b"\\ud"  # how a lone surrogate (text UTF-8 cannot hold) looks in ASCII JSON
Values = tuple[Any, ...]  # one row's values, in _INSERT's order


class StoreWriter:
    """Writes blocks of wire rows to the store at `path`, keeping it to `retention` events and
    `retention_bytes`. Never raises for a bad row or a failing disk: it counts, and tells `report`
    once (until a write succeeds again). A store file deleted or replaced under it is noticed at the
    next write: the writer then opens (or creates) the file the path now names."""

    def __init__(
        self,
        path: Path,
        retention: int,
        retention_bytes: int,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.retention = max(1, retention)
        self.retention_bytes = retention_bytes
        self._slack = max(100, self.retention // 20)  # trim by count once this far past the retention
        self._report = report or _to_stderr
        self.written = 0
        self.bad_rows = 0  # lines that are not an event's row
        self.write_failed = 0  # events a write failed for
        self._failing = False
        self._conn: sqlite3.Connection | None = None
        self._file: FileId | None = None
        self._tried = 0.0
        self._open()

    def write(self, block: bytes) -> None:
        """Store the rows of `block` (each a wire row followed by a newline) in one transaction."""
        rows, bad = parse_rows(block)
        self.bad_rows += bad
        if not rows:
            return
        if self._file is None or file_id(self.path) != self._file:
            self._reopen()
        if self._conn is None:
            self._failed(len(rows), "the store cannot be opened (see above)")
            return
        try:
            with self._conn:
                self._conn.executemany(_INSERT, rows)
            self._trim()
        except sqlite3.Error as exc:
            self._failed(len(rows), str(exc))
            return
        self.written += len(rows)
        self._failing = False

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self._trim(exact=True)
        except sqlite3.Error:
            pass  # the file is gone or damaged: what was written stays written
        self._conn.close()
        self._conn = None

    def _open(self) -> None:
        self._tried = time.monotonic()
        try:
            self._conn = open_writer(self.path)
        except StoreError as exc:
            self._conn = None
            self._report(f"edgecli: cannot record events: {exc}")
            return
        self._file = file_id(self.path)
        self._trim()

    def _reopen(self) -> None:
        if self._conn is None and time.monotonic() - self._tried < REOPEN_EVERY_S:
            return
        if self._conn is not None:
            # The -wal beside the path may still be the old file's, which a store put in its place
            # would replay: empty it (into the old file) first. SQLite leaves it alone on close.
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None
            self._report(
                f"edgecli: the event store {self.path} was removed or replaced while serving; events are "
                "recorded in the file now there (a fresh store when there was none)."
            )
        self._open()

    def _failed(self, count: int, why: str) -> None:
        self.write_failed += count
        if not self._failing:
            self._report(
                f"edgecli: cannot write events to {self.path} ({why}). Serving goes on, but `edgecli logs` "
                "and `edgecli tasks` miss what happens until it can write again: check the disk (full? "
                "removed? damaged?)."
            )
        self._failing = True

    def _trim(self, *, exact: bool = False) -> None:
        """Delete the oldest events past the retention (by count, or by bytes in use). Between
        trims the store may run a little past either, so that not every batch deletes."""
        assert self._conn is not None
        # Two subqueries, not `SELECT min(id), max(id)`: SQLite answers a lone min() or max() from the
        # primary key's b-tree, but a query holding both scans the whole table (~30 ms at 100,000
        # events, on every batch; bench/README.md).
        oldest, newest = self._conn.execute(_BOUNDS).fetchone()
        if newest is None:
            return
        count = newest - oldest + 1  # ids are consecutive: SQLite gives each row the largest id + 1
        keep = count
        if exact or count > self.retention + self._slack:
            keep = min(count, self.retention)
        pages, free, size = self._pages()
        used = (pages - free) * size
        if used > self.retention_bytes:
            keep = min(keep, int(count * TRIM_TO * self.retention_bytes / used))
        if keep < count:
            with self._conn:
                self._conn.execute("DELETE FROM events WHERE id <= ?", (newest - max(keep, 1),))
        # Freed pages are used again by the next rows; only a file past the limit (its limit lowered, or
        # made by an edgecli without one) gives its excess back to the disk.
        excess = pages - self.retention_bytes // size
        if excess > 0 and free > 0:
            # A script, not execute(): this pragma frees one page per step, and only a script's
            # statements are stepped to their end.
            self._conn.executescript(f"PRAGMA incremental_vacuum({min(excess, free)});")

    def _pages(self) -> tuple[int, int, int]:
        """The file's pages, how many of them are free, and their size in bytes."""
        assert self._conn is not None
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages), int(free), int(size)


def parse_rows(block: bytes) -> tuple[list[Values], int]:
    """The rows of `block` as INSERT values, and how many of its lines were not an event's row.

    The block is decoded as one JSON array (one call for all its rows, a third of the cost of one per
    row); a block holding anything else than one JSON value per line is decoded line by line."""
    lines = block.count(b"\n")
    decoded: Any = None
    if _ESCAPED_SURROGATE not in block:  # rare: such rows are made storable one by one, below
        try:
            decoded = json.loads(b"[" + block[:-1].replace(b"\n", b",") + b"]")
        except ValueError:  # a line that is not JSON, or bytes that are not UTF-8
            pass
    if decoded is None or len(decoded) != lines:
        decoded = [_line(line) for line in block.split(b"\n") if line]
    rows = [values for row in decoded if (values := _values(row)) is not None]
    return rows, lines - len(rows)


def _line(line: bytes) -> Any:
    try:
        row = json.loads(line.decode(errors="replace"))  # bytes that are not UTF-8 become U+FFFD
    except ValueError:
        return None
    return _storable(row) if _ESCAPED_SURROGATE in line else row


_TEXT_OR_NONE = (str, type(None))
_NUMBER = (int, float)


def _values(row: Any) -> Values | None:
    """A decoded row as INSERT values; None when it is not an event's row (each value of the type its
    column holds, so that one bad row never fails the batch's INSERT)."""
    if type(row) is not list or len(row) != ROW_LENGTH:
        return None
    ts, kind, function, worker, request, task, level, message, extra = row
    if not (
        type(ts) in _NUMBER
        and type(kind) is str
        and type(level) is str
        and type(message) is str
        and type(function) in _TEXT_OR_NONE
        and type(worker) in _TEXT_OR_NONE
        and type(request) in _TEXT_OR_NONE
        and type(task) in _TEXT_OR_NONE
    ):
        return None
    if extra is None:
        return (ts, kind, function, worker, request, task, level, message, None)
    if type(extra) is not dict:
        return None
    text = json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else None
    return (ts, kind, function, worker, request, task, level, message, text)


def _storable(value: Any) -> Any:
    """`value` with every text made storable: characters UTF-8 cannot encode become "?"."""
    if isinstance(value, str):
        return value.encode(errors="replace").decode()
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    return value


def pump(fd: int, writer: StoreWriter, every: float | None = None) -> None:
    """Hand every complete line read from `fd` to the writer, until EOF: at most one write (one
    commit) per `every` seconds. Each commit writes the same few hot pages (the table's and each
    index's last) to the WAL again, a cost that 20 rows share far worse than 2,000 (bench/README.md),
    so under load the rows read since the last commit wait for the next; an event after a quiet spell
    is written at once."""
    every = COMMIT_EVERY_S if every is None else every
    partial = b""
    held: list[bytes] = []  # complete lines read, not written yet
    last = 0.0
    while True:
        due = last + every - time.monotonic()
        if held and (due <= 0 or not select.select([fd], [], [], due)[0]):
            writer.write(b"".join(held))
            held.clear()
            last = time.monotonic()
            continue
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            break
        data = partial + chunk if partial else chunk
        end = data.rfind(b"\n") + 1
        partial = data[end:]
        if end:
            held.append(data[:end])
    if held:
        writer.write(b"".join(held))
    if partial:  # serve died in the middle of a write: a cut row is not a row
        _to_stderr(f"edgecli: the event store dropped a row cut short ({len(partial)} bytes)")


def lower_priority() -> None:
    """Run only on CPU time serving leaves idle."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):  # not Linux
        try:
            os.nice(19)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lower_priority()
    path, retention, retention_mb = Path(argv[0]), int(argv[1]), float(argv[2])
    writer = StoreWriter(path, retention, int(retention_mb * (1 << 20)))
    try:
        pump(sys.stdin.fileno(), writer)
    finally:
        writer.close()
        restrict(path)
    return 0


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
