"""The event store's file: where it lives, its schema, and opening it for writing or reading.

One SQLite file per project (`supabase/.temp/edgecli/events.db`) in WAL mode, so any number of
writers (one store process per `edgecli serve`) and readers share it; SQLite numbers the events
(INTEGER PRIMARY KEY), in commit order. docs/architecture.md describes the schema.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edgecli.errors import EdgecliError

SCHEMA_VERSION = 4
COLUMNS = ("ts", "kind", "function", "worker", "request", "task", "level", "message", "extra")
_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,  -- assigned by SQLite: events in the order they were committed
    ts REAL NOT NULL,  -- when it happened (epoch seconds)
    kind TEXT NOT NULL,
    function TEXT,
    worker TEXT,
    request TEXT,
    task TEXT,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    extra TEXT  -- the kind's own fields as a JSON object, NULL when it has none
);
CREATE INDEX events_function ON events (function);
CREATE INDEX events_request ON events (request);
CREATE INDEX events_task ON events (task);
CREATE INDEX events_kind_level ON events (kind, level);
CREATE INDEX events_ts ON events (ts);
"""
# What an older store format holds, dropped when serve replaces it (1: an `events` table; 2 and 3: an
# `events` view over JSON rows, one per event or one per batch of events).
_OLDER_FORMATS = {
    1: ("DROP TABLE IF EXISTS events",),
    2: ("DROP VIEW IF EXISTS events", "DROP TABLE IF EXISTS event_rows"),
    3: ("DROP VIEW IF EXISTS events", "DROP TABLE IF EXISTS event_batches"),
}
BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another serve's commit, or a checkpoint
READER_BUSY_TIMEOUT_S = 2.0  # readers wait less: in SQLite's wait, a Ctrl-C is not seen
DIR_MODE = 0o700  # the events hold what functions log (tokens, personal data): the user's only
FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm")
WAL_LIMIT_BYTES = 8 << 20  # the WAL is cut back to this after a checkpoint


class StoreError(EdgecliError):
    """The store file cannot be used (not SQLite, damaged, another format)."""


FileId = tuple[int, int]  # (st_dev, st_ino): which file a path names right now


def file_id(path: Path) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def prepare_dir(path: Path) -> None:
    """Make the store's directory (user-only), and make it user-only if it was not."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.parent.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path.parent, DIR_MODE)


def open_writer(path: Path) -> sqlite3.Connection:
    """The store at `path` opened for writing: created when missing, an older format replaced.

    Raises StoreError when the file is not a store this edgecli can write."""
    prepare_dir(path)
    if not path.exists():
        with _creation_lock(path):
            if not path.exists():
                _create(path)
    conn = _connect(path, "rw")
    conn.isolation_level = "IMMEDIATE"  # a write transaction waits for the write lock as it begins
    with _closed_on_error(conn, path):
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        # NORMAL is safe in WAL mode: a killed process loses nothing committed, only a power cut can.
        conn.execute("PRAGMA synchronous = NORMAL")
        version = _version(conn)
        if version in _OLDER_FORMATS or (version == 0 and _is_empty(conn)):
            _replace_older(conn, version)
        _check(conn, path, _version(conn))
    restrict(path)
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """The store at `path` opened read-only; StoreError when it is not one this edgecli reads."""
    conn = _connect(path, "ro")
    with _closed_on_error(conn, path):
        _check(conn, path, _version(conn))
    return conn


def restrict(path: Path) -> None:
    """Make the store's files user-only (a store made by an older edgecli may not be)."""
    for name in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        with contextlib.suppress(OSError):
            if name.stat().st_mode & 0o777 != FILE_MODE:
                os.chmod(name, FILE_MODE)


def unreadable(path: Path, exc: Exception) -> StoreError:
    return StoreError(
        f"Could not read the event store {path} ({exc}): the file is damaged or not an edgecli event "
        "store. It only holds past logs: delete it, and `edgecli serve` creates a fresh one."
    )


@contextlib.contextmanager
def _closed_on_error(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Close `conn` if the block fails; SQLite's errors become the one-paragraph StoreError."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unreadable(path, exc) from None
    except StoreError:
        conn.close()
        raise


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            timeout=BUSY_TIMEOUT_S if mode == "rw" else READER_BUSY_TIMEOUT_S,
            check_same_thread=False,
        )
    except sqlite3.DatabaseError as exc:
        raise unreadable(path, exc) from None
    return conn


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check(conn: sqlite3.Connection, path: Path, version: int) -> None:
    if version == SCHEMA_VERSION:
        conn.execute("SELECT id FROM events LIMIT 1")  # reads the schema: a damaged file fails here
        return
    if version == 0:
        raise StoreError(
            f"{path} is not an edgecli event store (it is an SQLite database without edgecli's schema). "
            "Move it away if you need it: `edgecli serve` then creates the store there."
        )
    remedy = (
        "`edgecli serve` replaces it with a fresh one when it next starts"
        if version in _OLDER_FORMATS
        else "delete it, and `edgecli serve` creates a fresh one"
    )
    raise StoreError(
        f"{path} was written by another edgecli version (store format {version}, this one reads "
        f"{SCHEMA_VERSION}). It only holds past logs: {remedy}."
    )


def _create(path: Path) -> None:
    """Make a new store under another name, then give it `path`, so that a reader finding the file
    (`logs -f` waits for it to appear) finds its schema too. A `-wal` or `-shm` left by a store that
    was deleted is removed first: SQLite would replay the old WAL into the new file."""
    making = path.with_name(f".{path.name}.{os.getpid()}.new")
    # Created user-only: SQLite gives the WAL and shared-memory files the database file's mode.
    os.close(os.open(making, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, FILE_MODE))
    conn = sqlite3.connect(making)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # retention gives pages back to the disk
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    finally:
        conn.close()  # the last connection to close takes the WAL file with it
    for side in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.with_name(path.name + side))
    os.replace(making, path)


def _replace_older(conn: sqlite3.Connection, version: int) -> None:
    """Start an older format's store afresh: it only holds past logs, so serve does not ask the user."""
    with conn:
        for statement in _OLDER_FORMATS.get(version, ()):
            conn.execute(statement)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")  # applies auto_vacuum, and gives the old format's pages back
    with conn:
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _is_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


@contextlib.contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    """Held while a missing store is made: two serves (or two store processes noticing a deleted
    file) must not both remove side files and create one."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
