"""The event store: SQLite in WAL mode, one writer (the serve process), any number of readers.

`StoreWriter` persists events; serve runs it in the store's own process (edgecli/store_process.py, fed
by edgecli/host/store_feed.py). The read side is edgecli/inspect/store.py, which shares the schema and
row conversion defined here.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edgecli.errors import EdgecliError
from edgecli.events import Event, Row, encode_json

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,  -- rowid: insertion order, what readers page and follow by
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    function TEXT,
    worker TEXT,
    request TEXT,
    task TEXT,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT  -- the kind's extra fields as a JSON object; NULL when there are none
);
-- No secondary index, on purpose: each one costs the writer about half as much again per event, while
-- readers either follow new rows by id or scan the whole store (200,000 rows: ~20 ms).
DROP INDEX IF EXISTS events_request;
DROP INDEX IF EXISTS events_task;
"""
COLUMNS = "id, ts, kind, function, worker, request, task, level, message, fields"
_INSERT = "INSERT INTO events (ts, kind, function, worker, request, task, level, message, fields) "
# The writer hands SQLite each batch as one JSON text (the rows as the workers sent them) and SQLite
# unpacks it: Python then does no work per event in the writer thread. Any Python work there, even
# building parameter tuples, holds the GIL that serve's event loop needs; measured at 20,000 events/s,
# that alone added 10-15 % to request latency, while SQLite's own work runs with the GIL released.
_JSON_INSERT = _INSERT + "SELECT {} FROM json_each(?)".format(
    ", ".join(f"json_extract(value, '$[{i}]')" for i in range(9))
)
# Rows whose JSON SQLite would store wrongly (a NUL cuts a string short, a lone surrogate becomes text
# readers cannot decode) go the other way: decoded in Python, bound as parameters.
_JSON_UNSAFE = (b"\\u0000", b"\\ud")
_ROW_SQL = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Many rows per statement, not executemany: Python's sqlite3 releases and re-takes the GIL a few times
# around every executed statement, and on serve's busy event loop each hand-off delays requests.
ROWS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    return _INSERT + "VALUES " + ", ".join([_ROW_SQL] * rows)


FLUSH_INTERVAL_S = 0.05  # a reader following the store sees an event at most this much later
BATCH_WAKE = 2000  # ...or sooner, once this many events are waiting (bursts)
MAX_TRANSACTION = 5000  # keeps one transaction (and the time a reader's snapshot lags) short


def _decoded_row(row_json: bytes) -> Row:
    row = json.loads(row_json.decode())
    if row[8] is not None:
        row[8] = encode_json(row[8])  # the column keeps the extra fields as JSON text
    return tuple(row)


def _sanitized_row(row_json: bytes) -> Row:
    """The row with text made storable: characters UTF-8 cannot encode become "?"."""
    return tuple(
        value.encode(errors="replace").decode() if isinstance(value, str) else value
        for value in _decoded_row(row_json)
    )


def _row_json(item: bytes | Event) -> bytes:
    return item if isinstance(item, bytes) else item.to_row_json()


def _has_json(conn: sqlite3.Connection) -> bool:
    """SQLite's JSON functions are built in since 3.38 and usually compiled in before; not always."""
    try:
        conn.execute("SELECT json_extract('[1]', '$[0]')")
    except sqlite3.Error:
        return False
    return True


def row_to_event(row: Row) -> Event:
    """A row selected as `COLUMNS` (id first, ignored here) back into an Event."""
    return Event.from_row(row[1:])


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
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL is safe in WAL mode: a killed process loses nothing committed, only a power cut can.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise EdgecliError(
            f"{path} is not a readable edgecli event store ({exc}). It only holds past logs: delete it "
            "and `edgecli serve` creates a fresh one."
        ) from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise EdgecliError(
            f"{path} was written by another edgecli version (store format {version}, this one reads "
            f"{SCHEMA_VERSION}). It only holds past logs: delete it and `edgecli serve` creates a fresh one."
        )
    return conn


class StoreWriter:
    """An EventSink persisting events to the SQLite store without ever blocking the caller on disk.

    `emit` only appends to an in-memory queue; a background thread writes the queue in batched
    transactions (every FLUSH_INTERVAL_S, or sooner past BATCH_WAKE waiting events) and now and then
    deletes all but the newest `retention` events. The queue is unbounded on purpose: a slow disk must
    delay events, not drop them. `close()` writes everything still queued and stops the thread.
    """

    def __init__(
        self, path: Path, retention: int, on_error: Callable[[Exception, Path], None] | None = None
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = max(1, retention)
        self.emitted = 0  # events handed to `emit`
        self.written = 0  # events committed so far
        self.failed = 0  # events lost to write errors (disk full...); `last_error` says why
        self.last_error: Exception | None = None
        self._on_error = on_error  # told when writes start failing (not again until one succeeds)
        self._failing = False
        self._conn = connect_store(path, create=True)
        # SQLite before 3.32 allows only 999 parameters per statement.
        self._rows = ROWS_PER_STATEMENT
        self._bound_rows = min(self._rows, self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 9)
        self._json = _has_json(self._conn)
        self._queue: deque[bytes | Event] = deque()
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
        # An event that arrived as its row is queued as those bytes; any other is encoded later, by
        # the writer thread, not by the caller.
        self._enqueue([event.row_json or event])

    def emit_rows(self, rows: list[bytes]) -> None:
        """Queue events given as their rows in JSON (`Event.to_row_json()`), as they came off the wire."""
        self._enqueue(rows)

    def _enqueue(self, items: list[bytes] | list[bytes | Event]) -> None:
        if self._closed:
            return  # past the final flush: nothing can be written any more
        self._queue.extend(items)
        self.emitted += len(items)
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
        go first in the next round (FIFO), so none waits more than two rounds, and bound-parameter
        statements stay the same size (compiled once) however the traffic comes in."""
        queue = self._queue
        while queue:
            count = min(len(queue), MAX_TRANSACTION)
            if whole and count >= self._rows:
                count -= count % self._rows
            batch = [_row_json(queue.popleft()) for _ in range(count)]
            try:
                self._insert(batch)
            except (ValueError, TypeError):
                # An odd value (a lone surrogate from undecodable output...) must not cost the whole batch.
                self._insert_each(batch)
            except sqlite3.Error as exc:
                # Disk full, the file removed under us: serving goes on, and whoever runs us is told.
                self._failed(exc, len(batch))
                continue
            else:
                self.written += len(batch)
                self._failing = False
            self._since_trim += len(batch)
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

    def _insert(self, rows: list[bytes]) -> None:
        with self._conn:
            for start in range(0, len(rows), self._rows):
                chunk = rows[start : start + self._rows]
                text = b",".join(chunk)
                if self._json and not any(marker in text for marker in _JSON_UNSAFE):
                    self._conn.execute(_JSON_INSERT, (f"[{text.decode()}]",))
                else:
                    self._insert_bound(chunk, _decoded_row)

    def _insert_bound(self, rows: list[bytes], to_row: Callable[[bytes], Row]) -> None:
        for start in range(0, len(rows), self._bound_rows):
            chunk = rows[start : start + self._bound_rows]
            params = list(itertools.chain.from_iterable(map(to_row, chunk)))
            self._conn.execute(_insert_sql(len(chunk)), params)

    def _insert_each(self, rows: list[bytes]) -> None:
        for row in rows:
            try:
                with self._conn:
                    self._insert_bound([row], _sanitized_row)
            except (sqlite3.Error, ValueError, TypeError) as exc:
                self._failed(exc, 1)
            else:
                self.written += 1

    def _trim(self) -> None:
        self._since_trim = 0
        try:
            with self._conn:
                self._conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (self.retention,)
                )
        except sqlite3.Error as exc:
            self.last_error = exc
