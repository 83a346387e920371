"""The event store: SQLite in WAL mode, one writer (the serve process), any number of readers.

`StoreWriter` persists events; serve runs it in the store's own process (edgecli/store_process.py, fed
by edgecli/host/store_feed.py). The read side is edgecli/inspect/store.py, which shares the schema and
row conversion defined here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgecli.compact_json import decode_json, encode_json
from edgecli.errors import EdgecliError
from edgecli.events import Event

SCHEMA_VERSION = 3
# Events are kept in batches, one table row per write (every ~50 ms under load): the rows as they came
# (Event.to_row_json(), what workers send), one per line of a JSON array. A table row per event cost
# SQLite ~0.6 µs to insert and ~0.4 µs to trim again per event, with the store process's CPU taken from
# the requests it records (bench/README.md); a row per batch costs ~0.13 µs per event in all. Events
# are numbered in insertion order (`first`..`last` of each batch): readers select batches by that range
# and unpack them in Python (edgecli/inspect/store.py), and the `events` view gives SQL one row per
# event.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_batches (
    last INTEGER PRIMARY KEY,  -- id of the batch's newest event: ids number events in insertion order
    first INTEGER NOT NULL,  -- id of its oldest
    stored REAL,  -- when it was written (epoch seconds): none of its events is newer
    rows TEXT NOT NULL  -- JSON array, one event per line: [ts, kind, function, worker, request, task,
                        -- level, message, fields]
);
CREATE VIEW IF NOT EXISTS events AS SELECT
    b.first + j.key AS id,
    j.value AS row,
    json_extract(j.value, '$[0]') AS ts,
    json_extract(j.value, '$[1]') AS kind,
    json_extract(j.value, '$[2]') AS function,
    json_extract(j.value, '$[3]') AS worker,
    json_extract(j.value, '$[4]') AS request,
    json_extract(j.value, '$[5]') AS task,
    json_extract(j.value, '$[6]') AS level,
    json_extract(j.value, '$[7]') AS message,
    json_extract(j.value, '$[8]') AS fields  -- the kind's extra fields as a JSON object, or NULL
-- A batch that is not JSON (written by hand, or by a broken tool) is left out rather than fail the query.
FROM event_batches AS b, json_each(CASE WHEN json_valid(b.rows) THEN b.rows ELSE '[]' END) AS j;
"""
# 1: a column per field in an `events` table; 2: a table row per event (`event_rows`), `events` a view.
_OLDER_FORMATS = {
    1: ("DROP TABLE IF EXISTS events",),
    2: ("DROP VIEW IF EXISTS events", "DROP TABLE IF EXISTS event_rows"),
}
ROW_SEPARATOR = ",\n"  # between two rows in a batch: rows are ASCII JSON, so never hold a raw newline
_ROW_SEPARATOR_BYTES = ROW_SEPARATOR.encode()
# Rows holding an escaped surrogate (`\ud...`): a lone one is text readers could not print, so such
# rows are decoded and re-encoded with it replaced (an emoji's escaped pair goes the same way, intact).
_SURROGATE = b"\\ud"
ROW_LENGTH = 9
PAGE_SIZE = 16384

FLUSH_INTERVAL_S = 0.05  # a reader following the store sees an event at most this much later
BATCH_WAKE = 2000  # ...or sooner, once this many events are waiting (bursts)
# Events per batch at most (give or take one block read from the pipe): keeps what a reader unpacks to
# show the newest few small, and one transaction (and the time a reader's snapshot lags) short.
MAX_BATCH = 5000


def _storable(value: Any) -> Any:
    """`value` with every text made storable: characters UTF-8 cannot encode become "?"."""
    if isinstance(value, str):
        return value.encode(errors="replace").decode()
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    return value


def _checked_row(row_json: bytes) -> str:
    """The row decoded, checked and encoded again with every text storable; ValueError if not a row."""
    row = json.loads(row_json.decode(errors="replace"))
    if not isinstance(row, list) or len(row) != ROW_LENGTH:
        raise ValueError(f"an event row is a JSON array of {ROW_LENGTH} values")
    return encode_json(_storable(row))


def batch_text(rows: list[str]) -> str:
    """Rows (or blocks of rows joined by ROW_SEPARATOR) as the text of one batch: built in one join,
    since each copy of a batch this large is fresh memory to fault in."""
    if not rows:
        return "[]"
    parts = ["["]
    for row in rows:
        parts += (row, ROW_SEPARATOR)
    parts[-1] = "]"
    return "".join(parts)


def batch_rows(batch: str) -> list[Any]:
    """The rows of a stored batch, decoded; a line that is not JSON becomes None (readers skip it)."""
    try:
        rows = decode_json(batch)
        if isinstance(rows, list):
            return rows
    except ValueError:
        pass  # one line is not JSON (put there by hand?): the others still are
    return [_decoded_or_none(line) for line in batch_lines(batch)]


def decode_lines(lines: list[str]) -> list[Any]:
    """Rows given as their JSON text, decoded (at once: per row, the parser's own overhead would be
    most of the cost); one that is not JSON becomes None."""
    rows = batch_rows(batch_text(lines))
    if len(rows) != len(lines):  # a line holding more than one value (written by hand?)
        return [_decoded_or_none(line) for line in lines]
    return rows


def batch_lines(batch: str) -> list[str]:
    """The rows of a stored batch as their JSON text, one per event."""
    return batch.removeprefix("[").removesuffix("]").split(ROW_SEPARATOR)


def _decoded_or_none(line: str) -> Any:
    try:
        return decode_json(line)
    except ValueError:
        return None


def rows_to_events(ids: Iterable[int], rows: list[Any]) -> list[tuple[int, Event]]:
    """Decoded rows and their ids as (id, Event) pairs, skipping any that is not an event's row."""
    found = []
    for event_id, row in zip(ids, rows, strict=True):
        if type(row) is list:  # exactly what JSON decodes an array to
            try:
                found.append((event_id, Event.from_row(row)))
            except (ValueError, TypeError):
                continue
    return found


def connect_store(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open the store; `create` makes the file and schema (writer), else it must exist (readers).

    Raises EdgecliError when the file is not an edgecli event store.
    """
    mode = "rwc" if create else "rw"
    try:
        if create and not path.exists():
            _create_file(path)
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=5.0, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")  # a no-op but on a file made elsewhere (empty)
            # NORMAL is safe in WAL mode: a killed process loses nothing committed, only a power cut can.
            conn.execute("PRAGMA synchronous = NORMAL")
            _create_schema(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version in (0, SCHEMA_VERSION):  # 0: not set, so the events must be there to tell
            conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise EdgecliError(
            f"{path} is not a readable edgecli event store ({exc}). It only holds past logs: delete it "
            "and `edgecli serve` creates a fresh one."
        ) from None
    if version != SCHEMA_VERSION:
        conn.close()
        remedy = (
            "`edgecli serve` replaces it with a fresh one when it next starts"
            if version in _OLDER_FORMATS
            else "delete it and `edgecli serve` creates a fresh one"
        )
        raise EdgecliError(
            f"{path} was written by another edgecli version (store format {version}, this one reads "
            f"{SCHEMA_VERSION}). It only holds past logs: {remedy}."
        )
    return conn


def _create_file(path: Path) -> None:
    """Make a new store under another name, then give it `path`: a reader that finds the file (`logs
    -f` waits for it to appear) finds its schema there too, never an empty database."""
    making = path.with_name(f".{path.name}.{os.getpid()}.new")
    conn = sqlite3.connect(making)
    try:
        # For a new file only (an existing one keeps its own): a quarter of the page writes and reads
        # per event of the default 4 KB.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        _create_schema(conn)
        conn.commit()
    finally:
        conn.close()  # the last connection to close takes the WAL file with it
    os.replace(making, path)


def last_event_id(conn: sqlite3.Connection) -> int:
    """The id of the newest event in the store (0 when it holds none)."""
    return int(conn.execute("SELECT coalesce(max(last), 0) FROM event_batches").fetchone()[0])


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the schema in a new file, or in place of an older format's: the store only holds past
    logs, so serve starts it afresh rather than ask the user to delete it. A newer format is left alone
    (connect_store then says another edgecli wrote it)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version in _OLDER_FORMATS:
        for statement in _OLDER_FORMATS[version]:
            conn.execute(statement)
    elif version != 0:
        return
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class StoreWriter:
    """An EventSink persisting events to the SQLite store without ever blocking the caller on disk.

    `emit_lines` (and `emit`) only turn rows into batch text and append it to an in-memory queue; a
    background thread writes what is queued as one batch (every FLUSH_INTERVAL_S, or sooner past
    BATCH_WAKE waiting events) and now and then deletes all but the newest `retention` events' batches.
    The queue is unbounded on purpose: a slow disk must delay events, not drop them. `close()` writes
    everything still queued, trims to exactly `retention` events and stops the thread.
    """

    def __init__(
        self, path: Path, retention: int, on_error: Callable[[Exception, Path], None] | None = None
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = max(1, retention)
        self.emitted = 0  # events handed to `emit` or `emit_lines`
        self.written = 0  # events committed so far
        # Events lost, counted apart so that each count has one thread writing it: rows that are not
        # events' rows (the emitting thread), and events a write failed for (disk full...: the writer).
        self.not_rows = 0
        self.write_failed = 0
        self.last_error: Exception | None = None
        self._on_error = on_error  # told when writes start failing (not again until one succeeds)
        self._failing = False
        self._conn = connect_store(path, create=True)
        self._next_id = last_event_id(self._conn) + 1
        # Blocks of rows as (count, rows joined by ROW_SEPARATOR). A list, not a deque: the writer takes
        # whole slices. Appending threads only ever extend it, the writer only cuts from the front (each
        # one step under the GIL).
        self._queue: list[tuple[int, str]] = []
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        # Trim often enough that the file stays near `retention` events, rarely enough to stay cheap.
        self._trim_every = max(1000, self.retention // 10)
        self._since_trim = 0
        self._trim()
        self._thread = threading.Thread(target=self._run, name="edgecli-event-store", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> int:
        """Events emitted that will never be written."""
        return self.not_rows + self.write_failed

    def emit(self, event: Event) -> None:
        self.emit_lines((event.row_json or event.to_row_json()) + b"\n")

    def emit_lines(self, lines: bytes) -> None:
        """Queue the rows of `lines`, each an event's row in JSON (`Event.to_row_json()`) followed by a
        newline: the store process's wire. serve decoded every row before sending it, so the block goes
        in as it is, decoded once; a block holding an escaped surrogate is decoded and checked row by
        row (the rare case: it costs ~30 times as much)."""
        if self._closed:
            return  # past the final flush: nothing can be written any more
        if _SURROGATE in lines:
            rows = lines.split(b"\n")[:-1]
            texts = []
            for row in rows:
                try:
                    texts.append(_checked_row(row))
                except ValueError as exc:  # not an event's row: it goes no further
                    self.last_error = exc
            self.not_rows += len(rows) - len(texts)
            self.emitted += len(rows) - len(texts)
            count, block = len(texts), ROW_SEPARATOR.join(texts)
        else:
            count = lines.count(b"\n")
            block = lines[:-1].replace(b"\n", _ROW_SEPARATOR_BYTES).decode(errors="replace")
        if count:
            self._queue.append((count, block))
            self.emitted += count
            if self.emitted - self.written - self.failed >= BATCH_WAKE:
                self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything emitted so far is committed (tests, and readers in the same process)."""
        target = self.emitted
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.written + self.failed < target and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.written >= target

    def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._closed = True
        self._write_pending()  # whatever raced in between the thread's last batch and `_closed`
        self._trim(exact=True)
        self._conn.close()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            self._write_pending()
        self._write_pending()

    def _write_pending(self) -> None:
        """Write the queue, one batch (and transaction) per MAX_BATCH events at most."""
        queue = self._queue
        while queue:
            taken = count = 0
            while taken < len(queue) and count < MAX_BATCH:
                count += queue[taken][0]
                taken += 1
            blocks = queue[:taken]
            del queue[:taken]
            batch = batch_text([block for _, block in blocks])
            try:
                with self._conn:
                    self._conn.execute(
                        "INSERT INTO event_batches (last, first, stored, rows) VALUES (?, ?, ?, ?)",
                        (self._next_id + count - 1, self._next_id, time.time(), batch),
                    )
            except sqlite3.Error as exc:
                # Disk full, the file removed under us: serving goes on, and whoever runs us is told.
                self._failed(exc, count)
                continue
            self._next_id += count
            self.written += count
            self._failing = False
            self._since_trim += count
            if self._since_trim >= self._trim_every:
                self._trim()

    def _failed(self, exc: Exception, count: int) -> None:
        self.last_error = exc
        self.write_failed += count
        if not self._failing and self._on_error is not None:
            self._on_error(exc, self.path)
        self._failing = True

    def _trim(self, *, exact: bool = False) -> None:
        """Delete the batches holding only events older than the newest `retention`. `exact` (at close):
        also cut the older events out of the batch holding the boundary, so exactly `retention` stay;
        in between, up to a batch's worth more may, which costs nothing to keep."""
        self._since_trim = 0
        oldest_kept = self._next_id - self.retention
        try:
            with self._conn:
                self._conn.execute("DELETE FROM event_batches WHERE last < ?", (oldest_kept,))
                if exact:
                    self._cut_boundary_batch(oldest_kept)
        except sqlite3.Error as exc:
            self.last_error = exc

    def _cut_boundary_batch(self, oldest_kept: int) -> None:
        boundary = self._conn.execute(
            "SELECT last, first, rows FROM event_batches WHERE first < ?", (oldest_kept,)
        ).fetchone()
        if boundary is not None:
            last, first, rows = boundary
            kept = batch_lines(rows)[oldest_kept - first :]
            self._conn.execute(
                "UPDATE event_batches SET first = ?, rows = ? WHERE last = ?",
                (oldest_kept, batch_text(kept), last),
            )
