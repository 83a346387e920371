"""The event store: SQLite in WAL mode, one writer (the serve process), any number of readers.

`StoreWriter` persists events; serve runs it in the store's own process (edgecli/store_process.py, fed
by edgecli/host/store_feed.py). The read side is edgecli/inspect/store.py, which shares the schema and
row conversion defined here.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecli.compact_json import decode_json, encode_json
from edgecli.errors import EdgecliError
from edgecli.events import Event, Row

SCHEMA_VERSION = 2
# Each event is kept as the row it came as (Event.to_row_json(), what workers send), and the `events`
# view unpacks the fields for readers. Unpacking on write, a column per field, cost SQLite ~3.5 µs per
# event (json_each, then json_extract per column); storing the row as it is costs ~0.8 µs. The writer
# runs at up to tens of thousands of events a second, next to the requests it records; readers are rare
# and filter 200,000 rows in ~30 ms through the view.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_rows (
    id INTEGER PRIMARY KEY,  -- insertion order, what readers page and follow by
    row TEXT NOT NULL  -- [ts, kind, function, worker, request, task, level, message, fields] as JSON
);
CREATE VIEW IF NOT EXISTS events AS SELECT
    id, row,
    json_extract(row, '$[0]') AS ts,
    json_extract(row, '$[1]') AS kind,
    json_extract(row, '$[2]') AS function,
    json_extract(row, '$[3]') AS worker,
    json_extract(row, '$[4]') AS request,
    json_extract(row, '$[5]') AS task,
    json_extract(row, '$[6]') AS level,
    json_extract(row, '$[7]') AS message,
    json_extract(row, '$[8]') AS fields  -- the kind's extra fields as a JSON object, or NULL
FROM event_rows;
-- No index, on purpose: the writer would pay for each one on every event, while readers either follow
-- new rows by id or scan the whole store.
"""
_OLDER_FORMATS = (1,)  # format 1 unpacked every field into a column of an `events` table
COLUMNS = "id, row"  # what readers select from `events`: row_to_event turns it back into an Event
# Rows holding an escaped surrogate (`\ud...`): a lone one is text readers could not print, so such
# rows are decoded and re-encoded with it replaced (an emoji's escaped pair goes the same way, intact).
_SURROGATE = b"\\ud"
ROW_LENGTH = 9
_TRIM = "DELETE FROM event_rows WHERE id <= (SELECT max(id) FROM event_rows) - ?"  # keeps the newest N
# Many rows per statement, not executemany: one statement per 500 rows is half the cost per row.
ROWS_PER_STATEMENT = 500
PAGE_SIZE = 16384


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    # Only event rows go in: a text that is not a JSON array of ROW_LENGTH values would make every query
    # on the view fail ("malformed JSON"). SQLite checks that for ~0.1 µs a row; Python would take ~2.
    values = ", ".join(["(?)"] * rows)
    return (
        f"INSERT INTO event_rows (row) SELECT column1 FROM (VALUES {values}) "
        f"WHERE json_valid(column1) AND json_array_length(column1) = {ROW_LENGTH}"
    )


FLUSH_INTERVAL_S = 0.05  # a reader following the store sees an event at most this much later
BATCH_WAKE = 2000  # ...or sooner, once this many events are waiting (bursts)
MAX_TRANSACTION = 5000  # keeps one transaction (and the time a reader's snapshot lags) short


def _storable(value: Any) -> Any:
    """`value` with every text made storable: characters UTF-8 cannot encode become "?"."""
    if isinstance(value, str):
        return value.encode(errors="replace").decode()
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    return value


def _storable_row(row_json: bytes) -> str:
    """The row as text to store: as it came (bytes that are not UTF-8 replaced, as `emit_lines` does),
    unless it holds an escaped surrogate; ValueError if it then is not an event's row."""
    return row_json.decode(errors="replace") if _SURROGATE not in row_json else _checked_row(row_json)


def _checked_row(row_json: bytes) -> str:
    """The row decoded, checked and encoded again with every text storable; ValueError if not a row."""
    row = json.loads(row_json.decode(errors="replace"))
    if not isinstance(row, list) or len(row) != ROW_LENGTH:
        raise ValueError(f"an event row is a JSON array of {ROW_LENGTH} values")
    return encode_json(_storable(row))


def row_to_event(row: Row) -> Event:
    """A row selected as `COLUMNS` back into an Event; ValueError if the stored row is not one."""
    return Event.from_row_json(row[1].encode())


def rows_to_events(rows: list[Row]) -> list[tuple[int, Event]]:
    """Rows selected as `COLUMNS` as (id, Event) pairs, skipping any that is not an event's row.

    One JSON parse for all of them: per row, the parser's own overhead would be most of the cost."""
    try:
        values = decode_json("[" + ",".join(row[1] for row in rows) + "]")
        return [(row[0], Event.from_row(value)) for row, value in zip(rows, values, strict=True)]
    except (ValueError, TypeError):
        pass  # one row is not JSON, or not an event's (put there by hand?): find it, skip it
    found = []
    for row in rows:
        try:
            found.append((row[0], row_to_event(row)))
        except (ValueError, TypeError):
            continue
    return found


def connect_store(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open the store; `create` makes the file and schema (writer), else it must exist (readers).

    Raises EdgecliError when the file is not an edgecli event store.
    """
    mode = "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=5.0, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        if create:
            # For a new file only (an existing one keeps its own): a quarter of the page writes and
            # reads per event, ~0.25 µs of the store process's system time per event.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
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


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the schema in a new file, or in place of an older format's: the store only holds past
    logs, so serve starts it afresh rather than ask the user to delete it. A newer format is left alone
    (connect_store then says another edgecli wrote it)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version in _OLDER_FORMATS:
        conn.execute("DROP TABLE IF EXISTS events")
    elif version != 0:
        return
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class StoreWriter:
    """An EventSink persisting events to the SQLite store without ever blocking the caller on disk.

    `emit` and `emit_rows` only make each row storable text and append it to an in-memory queue; a
    background thread writes the queue in batched transactions (every FLUSH_INTERVAL_S, or sooner past
    BATCH_WAKE waiting events) and now and then deletes all but the newest `retention` events. The queue
    is unbounded on purpose: a slow disk must delay events, not drop them. `close()` writes everything
    still queued and stops the thread.
    """

    def __init__(
        self, path: Path, retention: int, on_error: Callable[[Exception, Path], None] | None = None
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = max(1, retention)
        self.emitted = 0  # events handed to `emit`, `emit_rows` or `emit_lines`
        self.written = 0  # events committed so far
        self.failed = 0  # events lost: write errors (disk full...) or rows that are not events' rows
        self.last_error: Exception | None = None
        self._on_error = on_error  # told when writes start failing (not again until one succeeds)
        self._failing = False
        self._conn = connect_store(path, create=True)
        # SQLite before 3.32 allows only 999 parameters per statement.
        self._rows = min(ROWS_PER_STATEMENT, self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        # Rows as text to bind. A list, not a deque: the writer takes whole slices. Appending threads
        # only ever extend it, the writer only cuts from the front (each one step under the GIL).
        self._queue: list[str] = []
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        # Trim often enough that the file stays near `retention` rows, rarely enough to stay cheap.
        self._trim_every = max(1000, self.retention // 10)
        self._since_trim = 0
        self._trim()
        self._thread = threading.Thread(target=self._run, name="edgecli-event-store", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self.emit_rows([event.row_json or event.to_row_json()])

    def emit_rows(self, rows: list[bytes]) -> None:
        """Queue events given as their rows in JSON (`Event.to_row_json()`), as they came off the wire."""
        if self._closed:
            return  # past the final flush: nothing can be written any more
        texts = []
        for row in rows:
            try:
                texts.append(_storable_row(row))
            except ValueError as exc:  # not an event's row: it goes no further
                self.emitted += 1
                self.failed += 1
                self.last_error = exc
        self._enqueue(texts)

    def emit_lines(self, lines: bytes) -> None:
        """Queue the rows of `lines`, each a row as `emit_rows` takes it followed by a newline (the
        store process's wire): one decode for all of them, unless one needs more care."""
        if _SURROGATE in lines:
            self.emit_rows(lines.split(b"\n")[:-1])
            return
        texts = lines.decode(errors="replace").split("\n")
        texts.pop()  # after the last newline
        self._enqueue(texts)

    def _enqueue(self, texts: list[str]) -> None:
        if self._closed:
            return  # past the final flush: nothing can be written any more
        self._queue.extend(texts)
        self.emitted += len(texts)
        if len(self._queue) >= BATCH_WAKE:
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
        self._trim()
        self._conn.close()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            self._write_pending(whole=True)
        self._write_pending()

    def _write_pending(self, *, whole: bool = False) -> None:
        """Write the queue. `whole`: under load, only whole statements' worth; the few events left over
        go first in the next round (FIFO), so none waits more than two rounds, and statements stay the
        same size (compiled once) however the traffic comes in."""
        queue = self._queue
        while queue:
            count = min(len(queue), MAX_TRANSACTION)
            if whole and count >= self._rows:
                count -= count % self._rows
            batch = queue[:count]
            del queue[:count]
            try:
                inserted = self._insert(batch)
            except sqlite3.Error as exc:
                # Disk full, the file removed under us: serving goes on, and whoever runs us is told.
                self._failed(exc, len(batch))
                continue
            self.written += inserted
            if inserted < len(batch):
                self.failed += len(batch) - inserted
                self.last_error = ValueError(f"{len(batch) - inserted} rows were not events' rows")
            self._failing = False
            self._since_trim += inserted
            if self._since_trim >= self._trim_every:
                self._trim()
            if whole and len(queue) < self._rows:
                break

    def _failed(self, exc: Exception, count: int) -> None:
        self.last_error = exc
        self.failed += count
        if not self._failing and self._on_error is not None:
            self._on_error(exc, self.path)
        self._failing = True

    def _insert(self, rows: list[str]) -> int:
        """Insert the rows in one transaction; how many were events' rows (and so inserted)."""
        inserted = 0
        with self._conn:
            for start in range(0, len(rows), self._rows):
                chunk = rows[start : start + self._rows]
                inserted += self._conn.execute(_insert_sql(len(chunk)), chunk).rowcount
        return inserted

    def _trim(self) -> None:
        self._since_trim = 0
        try:
            with self._conn:
                self._conn.execute(_TRIM, (self.retention,))
        except sqlite3.Error as exc:
            self.last_error = exc
