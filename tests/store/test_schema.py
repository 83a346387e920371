"""The store file: its schema, older and newer formats, files that are not a store, user-only modes."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from serving import rows, stored_events

from edgecli.errors import EdgecliError
from edgecli.events import Event
from edgecli.store import schema
from edgecli.store.schema import SCHEMA_VERSION, StoreError, open_reader, open_writer

pytestmark = pytest.mark.timeout(20)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_has_the_events_table_its_indexes_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    open_writer(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
    assert columns == ["id", *schema.COLUMNS]
    assert indexes == {f"events_{name}" for name in ("function", "request", "task", "kind_level", "ts")}


def test_the_store_and_its_directory_are_the_users_only(tmp_path: Path) -> None:
    path = tmp_path / "supabase" / ".temp" / "edgecli" / "events.db"
    conn = open_writer(path)
    with conn:
        conn.execute("INSERT INTO events (ts, kind, level, message) VALUES (1, 'log', 'info', 'x')")
    try:
        assert _mode(path.parent) == 0o700
        for name in ("events.db", "events.db-wal", "events.db-shm"):
            assert _mode(path.parent / name) == 0o600, name
    finally:
        conn.close()


def test_a_store_left_readable_by_others_is_made_the_users_only(tmp_path: Path) -> None:
    path = tmp_path / "edgecli" / "events.db"
    open_writer(path).close()
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    open_writer(path).close()
    assert (_mode(path.parent), _mode(path)) == (0o700, 0o600)


def test_a_new_store_gets_its_name_only_once_its_schema_is_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `logs -f` waits for the file to appear, then reads it: it must never find an empty database.
    path = tmp_path / "events.db"
    seen: list[tuple[bool, int]] = []
    real_replace = os.replace

    def watched(src: str | Path, dst: str | Path) -> None:
        conn = sqlite3.connect(src)
        seen.append((path.exists(), conn.execute("PRAGMA user_version").fetchone()[0]))
        conn.close()
        real_replace(src, dst)

    monkeypatch.setattr(schema.os, "replace", watched)
    open_writer(path).close()
    assert seen == [(False, SCHEMA_VERSION)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".events.db.lock", "events.db"]


def test_a_wal_left_by_a_deleted_store_is_not_replayed_into_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    conn = open_writer(path)
    with conn:
        conn.execute("INSERT INTO events (ts, kind, level, message) VALUES (1, 'log', 'info', 'old')")
    path.unlink()  # what is left: events.db-wal and -shm holding the old event
    assert Path(f"{path}-wal").exists()
    open_writer(path).close()
    conn.close()
    assert stored_events(path) == []


_OLDER_STORES = {
    1: [  # a column per field
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL)",
        "INSERT INTO events (ts, kind) VALUES (1.0, 'log')",
    ],
    2: [  # a table row per event, and a view
        "CREATE TABLE event_rows (id INTEGER PRIMARY KEY, row TEXT NOT NULL)",
        "CREATE VIEW events AS SELECT id, row, json_extract(row, '$[1]') AS kind FROM event_rows",
        """INSERT INTO event_rows (row) VALUES ('[1.0,"log",null,null,null,null,"info","old",null]')""",
    ],
    3: [  # a table row per batch of events, and a view
        "CREATE TABLE event_batches (last INTEGER PRIMARY KEY, first INTEGER, stored REAL, rows TEXT)",
        "CREATE VIEW events AS SELECT first AS id FROM event_batches",
        """INSERT INTO event_batches VALUES (1, 1, 1.0, '[[1.0,"log",null,null,null,null,"info","o",0]]')""",
    ],
}


@pytest.mark.parametrize("version", sorted(_OLDER_STORES))
def test_serve_replaces_a_store_of_an_older_format_and_readers_say_so(tmp_path: Path, version: int) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        for statement in _OLDER_STORES[version]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(
        StoreError, match=rf"another edgecli version \(store format {version}.*serve. replaces it"
    ):
        open_reader(path)  # readers leave it alone...
    conn = open_writer(path)  # ...serve starts it afresh: it only held past logs
    with conn:
        conn.execute("INSERT INTO events (ts, kind, level, message) VALUES (1, 'log', 'info', 'new')")
    conn.close()
    assert [e.message for e in stored_events(path)] == ["new"]
    with sqlite3.connect(path) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type != 'index'")}
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert names == {"events"}


def test_a_store_of_a_newer_format_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute("PRAGMA user_version = 99")
    for opener in (open_writer, open_reader):
        with pytest.raises(StoreError, match=r"another edgecli version \(store format 99.*delete it"):
            opener(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("future",)]


def test_an_empty_file_becomes_a_store_and_another_database_is_left_alone(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    open_writer(empty).close()
    assert stored_events(empty) == []
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
    with pytest.raises(StoreError, match="not an edgecli event store"):
        open_writer(other)


def test_a_file_that_is_not_sqlite_is_a_clear_error_for_writers_and_readers(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_text("not sqlite at all " * 100)
    for opener in (open_writer, open_reader):
        with pytest.raises(
            EdgecliError, match=r"Could not read the event store .*damaged.*delete it"
        ) as info:
            opener(path)
        assert "\n" not in str(info.value)


def test_a_store_is_written_by_what_any_writer_sends(tmp_path: Path) -> None:
    # The wire row and the schema agree: the writer's INSERT fills one column per field.
    from edgecli.store.writer import StoreWriter

    path = tmp_path / "events.db"
    writer = StoreWriter(path, 10, 1 << 20, report=print)
    writer.write(rows(Event("boot", "booted", function="f", fields={"boot_ms": 3})))
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT kind, function, extra FROM events").fetchall() == [
            ("boot", "f", '{"boot_ms":3}')
        ]
