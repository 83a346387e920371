"""Event records and the store writer: batching, ordering, retention, and surviving a killed writer."""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from serving import stored_events, wait_until

from edgecli import store
from edgecli.errors import EdgecliError
from edgecli.events import Event, iso_ts, parse_ts
from edgecli.store import StoreWriter, connect_store

pytestmark = pytest.mark.timeout(20)


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def test_record_round_trip_keeps_base_and_kind_fields() -> None:
    event = Event(
        "task_end",
        "task notify failed",
        "error",
        function="hello",
        worker="w1",
        request="r1",
        task="w1.t-1",
        ts=1_700_000_000.25,
        fields={"name": "notify", "status": "failed", "duration_ms": 12.5, "error": "Tb", "reason": None},
    )
    record = event.to_record()
    assert record["ts"] == "2023-11-14T22:13:20.250Z"
    assert Event.from_record(record) == event
    assert parse_ts(iso_ts(1_700_000_000.5)) == 1_700_000_000.5
    # The wire form (a worker's event as the store's row, in JSON) round-trips too, and the host keeps
    # the bytes as they arrived, so the store writes them without encoding them again.
    payload = event.to_row_json()
    row = json.loads(payload)
    assert row[0] == 1_700_000_000.25 and row[8] == dict(event.fields)  # nested, not a JSON string
    arrived = Event.from_row_json(payload)
    assert arrived == event and arrived.to_row_json() is payload
    # from_row sets the slots itself, bypassing __init__: every field must be set, row_json included.
    for name in (f.name for f in dataclasses.fields(Event)):
        assert getattr(arrived, name) == getattr(replace(event, row_json=payload), name), name
    assert arrived.to_row() == (*row[:8], json.dumps(row[8], separators=(",", ":")))
    assert Event("log", "hi").to_row()[8] is None and Event.from_row(Event("log").to_row()).fields == {}


def test_writer_creates_the_store_in_wal_mode_and_writes_everything_in_order(tmp_path: Path) -> None:
    path = tmp_path / "supabase" / ".temp" / "edgecli" / "events.db"
    writer = StoreWriter(path, retention=1000)
    events = [
        Event("log", f"line {i}", function="hello", request=f"r{i % 3}", fields={"i": i} if i % 2 else {})
        for i in range(300)
    ]
    for event in events:
        writer.emit(event)
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
    assert stored_events(path) == events
    assert (writer.emitted, writer.written, writer.failed) == (300, 300, 0)


def test_a_new_store_gets_its_name_only_once_its_schema_is_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `logs -f` waits for the file to appear, then reads it: it must never find an empty database.
    path = tmp_path / "events.db"
    existed: list[bool] = []
    create_schema = store._create_schema

    def watched(conn: sqlite3.Connection) -> None:
        existed.append(path.exists())
        create_schema(conn)

    monkeypatch.setattr(store, "_create_schema", watched)
    StoreWriter(path, retention=10).close()
    assert existed[0] is False
    assert [p.name for p in tmp_path.iterdir()] == ["events.db"]  # nothing left under another name
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_reader_sees_events_while_the_writer_runs_without_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=1000)
    try:
        writer.emit(Event("log", "early"))
        wait_until(lambda: _count(path) >= 1, what="the event to be committed")
        assert [e.message for e in stored_events(path)] == ["early"]
    finally:
        writer.close()


def test_twenty_thousand_events_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=100_000)
    event = Event("log", "x" * 80, function="hello", worker="w1", request="r1")
    for _ in range(20_000):
        writer.emit(event)
    assert writer.flush(timeout=10)
    writer.close()
    assert _count(path) == 20_000


def test_retention_keeps_exactly_the_newest_events_after_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=50)
    for i in range(180):
        writer.emit(Event("log", str(i)))
    writer.close()
    assert [e.message for e in stored_events(path)] == [str(i) for i in range(130, 180)]


def test_retention_cuts_inside_a_batch_at_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=5)
    writer.emit_lines(b"".join(Event("log", str(i)).to_row_json() + b"\n" for i in range(8)))
    writer.close()
    assert [e.message for e in stored_events(path)] == ["3", "4", "5", "6", "7"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT min(id), max(id), count(*) FROM events").fetchone() == (4, 8, 5)


def test_retention_bounds_the_store_while_serving(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=2000)
    try:
        for round_ in range(10):
            for i in range(1000):
                writer.emit(Event("log", f"{round_}-{i}"))
            assert writer.flush()
            # Trimming happens in the writer thread every so often, not only at close.
            assert _count(path) <= 2000 + 1000
    finally:
        writer.close()
    assert _count(path) == 2000


def test_retention_applies_to_a_store_left_by_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = StoreWriter(path, retention=500)
    for i in range(400):
        first.emit(Event("log", str(i)))
    first.close()
    second = StoreWriter(path, retention=100)
    second.emit(Event("log", "new"))
    second.close()
    messages = [e.message for e in stored_events(path)]
    assert len(messages) == 100 and messages[-1] == "new" and messages[0] == "301"


def test_an_unstorable_value_costs_only_its_own_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=100)
    writer.emit(Event("log", "before"))
    writer.emit(Event("log", "bad \udcff byte"))  # a lone surrogate cannot be encoded as UTF-8
    writer.emit(Event("log", "after", fields={"when": datetime(2024, 1, 1, tzinfo=UTC)}))
    writer.close()
    stored = stored_events(path)
    assert [e.message for e in stored] == ["before", "bad ? byte", "after"]
    assert stored[2].fields == {"when": "2024-01-01 00:00:00+00:00"}  # not JSON: stored as text
    assert writer.written == 3 and writer.failed == 0


def test_every_text_and_timestamp_is_stored_exactly_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=10_000)
    texts = ["plain", "café ünïcode", 'quote " and \\ backslash', "tab\tend", "emoji 😀", "nul \x00 inside"]
    events = [
        Event(
            "log",
            f"{i} {texts[i % len(texts)]}",
            function="fn",
            task=f"w.t-{i}" if i % 7 == 0 else None,
            ts=1_700_000_000 + i / 1000 + 0.000123,
            fields={"i": i, "text": texts[i % len(texts)]} if i % 5 == 0 else {},
        )
        for i in range(1200)
    ]
    for event in events:
        writer.emit(event)
    writer.close()
    assert stored_events(path) == events
    assert (writer.written, writer.failed) == (len(events), 0)


def test_the_events_view_gives_sql_a_column_per_field(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=10)
    writer.emit(
        Event("log", "hi", level="warning", function="fn", worker="w1", request="r1", task="w1.t-1", ts=5.5)
    )
    writer.emit(Event("request", "GET /", function="fn", fields={"status": 200}, ts=6.0))
    writer.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT ts, kind, function, worker, request, task, level, message, fields FROM events ORDER BY id"
        ).fetchall()
        assert rows == [
            (5.5, "log", "fn", "w1", "r1", "w1.t-1", "warning", "hi", None),
            (6.0, "request", "fn", None, None, None, "info", "GET /", '{"status":200}'),
        ]
        assert conn.execute("SELECT message FROM events WHERE level = 'warning'").fetchall() == [("hi",)]


def test_lines_as_the_store_process_reads_them_are_stored_as_sent(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=100)
    good = [Event("log", f"ok {i}", function="fn", ts=float(i)) for i in range(4)]
    writer.emit_lines(b"".join(event.to_row_json() + b"\n" for event in good[:2]))  # the usual block
    writer.emit_lines(b'[1.0,"log",null,null,null,null,"info","\xff",null]\n')  # not UTF-8: replaced
    writer.emit_lines(
        good[2].to_row_json()
        + b"\n"
        + Event("log", "lone \udcff", ts=9.0).to_row_json()  # an escaped lone surrogate: these rows decoded
        + b"\nnot json\n[1, 2]\n"  # ...and checked: what is not an event's row goes no further
        + good[3].to_row_json()
        + b"\n"
    )
    writer.close()
    messages = [e.message for e in stored_events(path)]
    assert messages == ["ok 0", "ok 1", "\ufffd", "ok 2", "lone ?", "ok 3"]
    assert (writer.emitted, writer.written, writer.failed) == (8, 6, 2)
    with sqlite3.connect(path) as conn:  # the view gives SQL every stored event, numbered in order
        assert conn.execute("SELECT id, message FROM events WHERE level = 'info'").fetchall() == list(
            enumerate(messages, start=1)
        )


def test_a_line_that_is_not_an_events_row_costs_readers_only_itself(tmp_path: Path) -> None:
    # serve only sends rows it decoded, so the usual block goes in unchecked; should anything else get
    # in, readers skip it and keep every event around it, and SQL on the view still runs.
    path = tmp_path / "events.db"
    writer = StoreWriter(path, retention=100)
    good = [Event("log", f"ok {i}", ts=float(i)) for i in range(3)]
    writer.emit_lines(good[0].to_row_json() + b"\nnot json\n" + good[1].to_row_json() + b"\n[1, 2]\n")
    writer.emit_lines(good[2].to_row_json() + b"\n")
    writer.close()
    assert [(e.message, e.ts) for e in stored_events(path)] == [("ok 0", 0.0), ("ok 1", 1.0), ("ok 2", 2.0)]
    with sqlite3.connect(path) as conn:
        conn.execute("SELECT count(*) FROM events WHERE level = 'info'").fetchone()


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
}


@pytest.mark.parametrize("version", sorted(_OLDER_STORES))
def test_serve_replaces_a_store_of_an_older_format(tmp_path: Path, version: int) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        for statement in _OLDER_STORES[version]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(
        EdgecliError, match=rf"another edgecli version \(store format {version}.*serve. replaces it"
    ):
        connect_store(path, create=False)  # readers leave it alone...
    writer = StoreWriter(path, retention=10)  # ...serve starts it afresh: it only held past logs
    writer.emit(Event("log", "new"))
    writer.close()
    assert [e.message for e in stored_events(path)] == ["new"]
    with sqlite3.connect(path) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {"event_batches", "events"}


def test_a_store_of_a_newer_format_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(EdgecliError, match=r"another edgecli version \(store format 99"):
        StoreWriter(path, retention=10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("future",)]


def test_emit_after_close_is_ignored(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "events.db", retention=10)
    writer.close()
    writer.emit(Event("log", "late"))
    writer.close()  # idempotent
    assert _count(tmp_path / "events.db") == 0


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_text("not sqlite at all " * 100)
    with pytest.raises(EdgecliError, match=r"not a readable edgecli event store.*delete it"):
        StoreWriter(path, retention=10)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgecli.events import Event
    from edgecli.store import StoreWriter

    writer = StoreWriter(Path(sys.argv[1]), retention=1_000_000)
    i = 0
    while True:
        writer.emit(Event("log", f"line {i}", function="hello", task=f"t-{i % 7}"))
        i += 1
        if i == 2000:
            writer.flush()
            print("ready", flush=True)
    """
)


def test_a_store_written_by_a_killed_writer_stays_readable_and_writable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # Kill it in the middle of later batches: once some beyond the flushed 2000 are committed.
        wait_until(lambda: _count(path) > 2500, what="later batches to be committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    stored = stored_events(path)
    assert len(stored) >= 2000
    # Committed batches are whole and in order: ids 0..n-1 with no gap.
    assert [e.message for e in stored] == [f"line {i}" for i in range(len(stored))]
    writer = StoreWriter(path, retention=1_000_000)
    writer.emit(Event("log", "after restart"))
    writer.close()
    assert stored_events(path)[-1].message == "after restart"
