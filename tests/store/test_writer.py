"""The store writer: rows in order, what is not a row, retention by count and by bytes, a store file
deleted or replaced under it, a killed writer, and the store process's read loop."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from serving import rows, stored_events, wait_until

from edgecli.events import Event
from edgecli.store import writer as writer_module
from edgecli.store.writer import StoreWriter, pump

pytestmark = pytest.mark.timeout(30)


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _writer(path: Path, retention: int = 100_000, retention_bytes: int = 100 << 20) -> StoreWriter:
    return StoreWriter(path, retention, retention_bytes, report=lambda message: None)


def test_the_writer_creates_the_store_and_writes_everything_in_order(tmp_path: Path) -> None:
    path = tmp_path / "supabase" / ".temp" / "edgecli" / "events.db"
    writer = _writer(path)
    events = [
        Event("log", f"line {i}", function="hello", request=f"r{i % 3}", fields={"i": i} if i % 2 else {})
        for i in range(300)
    ]
    for start in range(0, 300, 7):
        writer.write(rows(*events[start : start + 7]))
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stored_events(path) == events
    assert (writer.written, writer.bad_rows, writer.write_failed) == (300, 0, 0)


def test_twenty_thousand_events_in_one_block_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
    writer.write(rows(*(Event("log", "x" * 80, function="hello", worker="w1") for _ in range(20_000))))
    writer.close()
    assert _count(path) == 20_000


def test_a_reader_sees_events_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
    try:
        writer.write(rows(Event("log", "early")))
        assert [e.message for e in stored_events(path)] == ["early"]  # committed on return
    finally:
        writer.close()


def test_the_events_table_gives_sql_a_column_per_field(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
    writer.write(
        rows(
            Event("log", "hi", "warning", function="fn", worker="w1", request="r1", task="w1.t-1", ts=5.5),
            Event("request", "GET /", function="fn", fields={"status": 200, "path": "/é"}, ts=6.0),
        )
    )
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT id, ts, kind, function, worker, request, task, level, message, extra FROM events"
        ).fetchall() == [
            (1, 5.5, "log", "fn", "w1", "r1", "w1.t-1", "warning", "hi", None),
            (2, 6.0, "request", "fn", None, None, None, "info", "GET /", '{"status":200,"path":"/é"}'),
        ]
        assert conn.execute(
            "SELECT message FROM events WHERE json_extract(extra, '$.status') = 200"
        ).fetchall() == [("GET /",)]


def test_every_text_and_timestamp_is_stored_exactly_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
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
    writer.write(rows(*events))
    writer.close()
    assert stored_events(path) == events


def test_what_is_not_an_events_row_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
    good = [Event("log", f"ok {i}", function="fn", ts=float(i)) for i in range(4)]
    writer.write(rows(*good[:2]))
    writer.write(b'[1.0,"log",null,null,null,null,"info","\xff",null]\n')  # not UTF-8: replaced
    writer.write(
        rows(good[2], Event("log", "lone \udcff", ts=9.0, fields={"k": "\udcff"}))  # a lone surrogate
        + b"not json\n[1, 2]\n"
        + b'[1,"log",5,null,null,null,"info","m",null]\n'  # a number where a function's name belongs
        + b'[1,"log",null,null,null,null,"info","m",[1]]\n'  # a list where the kind's fields belong
        + rows(good[3], Event("log", "after", fields={"when": datetime(2024, 1, 1, tzinfo=UTC)}))
    )
    writer.close()
    stored = stored_events(path)
    assert [e.message for e in stored] == ["ok 0", "ok 1", "\ufffd", "ok 2", "lone ?", "ok 3", "after"]
    assert stored[4].fields == {"k": "?"}
    assert stored[6].fields == {"when": "2024-01-01 00:00:00+00:00"}  # not JSON: stored as text
    assert (writer.written, writer.bad_rows) == (7, 4)


def test_retention_keeps_exactly_the_newest_events_after_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path, retention=50)
    for i in range(180):
        writer.write(rows(Event("log", str(i))))
    writer.close()
    assert [e.message for e in stored_events(path)] == [str(i) for i in range(130, 180)]


def test_retention_bounds_the_store_while_serving(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path, retention=2000)
    try:
        for round_ in range(10):
            writer.write(rows(*(Event("log", f"{round_}-{i}") for i in range(1000))))
            assert _count(path) <= 2000 + 1000
    finally:
        writer.close()
    assert _count(path) == 2000


def test_retention_applies_to_a_store_left_by_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = _writer(path, retention=500)
    first.write(rows(*(Event("log", str(i)) for i in range(400))))
    first.close()
    second = _writer(path, retention=100)
    second.write(rows(Event("log", "new")))
    second.close()
    messages = [e.message for e in stored_events(path)]
    assert len(messages) == 100 and messages[-1] == "new" and messages[0] == "301"


def _db_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def test_retention_by_bytes_keeps_the_file_near_its_limit_and_the_newest_events(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    limit = 1 << 20
    writer = _writer(path, retention=1_000_000, retention_bytes=limit)
    try:
        for round_ in range(40):  # ~8 MB of log lines in all
            writer.write(rows(*(Event("log", f"{round_}-{i} " + "x" * 2000) for i in range(100))))
        newest = stored_events(path)[-1].message
        assert newest.startswith("39-99 ")
        assert _db_bytes(path) <= 1.5 * limit  # pages freed by retention go back to the disk
    finally:
        writer.close()
    assert 100 < _count(path) < 1000


def test_a_store_larger_than_a_lowered_limit_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    big = _writer(path)
    big.write(rows(*(Event("log", f"{i} " + "x" * 2000) for i in range(2000))))  # ~4 MB
    big.close()
    assert _db_bytes(path) > 3 << 20
    small = _writer(path, retention_bytes=1 << 20)
    small.write(rows(Event("log", "newest")))
    small.close()
    assert _db_bytes(path) <= 1.5 * (1 << 20)
    assert stored_events(path)[-1].message == "newest"


def test_a_deleted_store_is_noticed_and_a_fresh_one_started_without_the_old_wal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    said: list[str] = []
    writer = StoreWriter(path, 1000, 100 << 20, report=said.append)
    reader = sqlite3.connect(path)  # holds the WAL open, as a running `logs -f` does
    try:
        writer.write(rows(*(Event("log", f"old {i}") for i in range(50))))
        reader.execute("SELECT count(*) FROM events").fetchone()
        assert Path(f"{path}-wal").exists()
        path.unlink()  # the user removes events.db; its -wal and -shm stay behind
        writer.write(rows(Event("log", "new")))
        assert [e.message for e in stored_events(path)] == ["new"]  # the old WAL was not replayed
        assert any("removed or replaced" in message for message in said)
        writer.write(rows(Event("log", "newer")))
    finally:
        writer.close()
        reader.close()
    assert [e.message for e in stored_events(path)] == ["new", "newer"]
    assert writer.write_failed == 0


def test_a_replaced_store_is_written_from_then_on(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = _writer(path)
    other = _writer(tmp_path / "other.db")
    try:
        writer.write(rows(Event("log", "before")))
        other.write(rows(Event("log", "in the copy")))
        other.close()
        os.replace(tmp_path / "other.db", path)
        writer.write(rows(Event("log", "after")))
    finally:
        writer.close()
    assert [e.message for e in stored_events(path)] == ["in the copy", "after"]


def test_a_store_that_cannot_be_written_is_reported_once_until_it_can(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    said: list[str] = []
    writer = StoreWriter(path, 1000, 100 << 20, report=said.append)
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock past the writer's busy timeout
    assert writer._conn is not None
    writer._conn.execute("PRAGMA busy_timeout = 10")  # not the 30 s serve waits for another writer
    try:
        writer.write(rows(Event("log", "lost 1")))
        writer.write(rows(Event("log", "lost 2")))
    finally:
        blocker.rollback()
        blocker.close()
    writer.write(rows(Event("log", "kept")))
    writer.close()
    assert [message for message in said if "cannot write events" in message] == [said[0]]
    assert "locked" in said[0] and (writer.write_failed, writer.written) == (2, 1)
    assert [e.message for e in stored_events(path)] == ["kept"]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgecli.events import Event
    from edgecli.store.writer import StoreWriter

    writer = StoreWriter(Path(sys.argv[1]), 1_000_000, 1 << 30)
    i = 0
    while True:
        block = b"".join(Event("log", f"line {i + j}").to_row_json() + b"\\n" for j in range(100))
        writer.write(block)
        i += 100
        if i == 2000:
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
        wait_until(lambda: _count(path) > 2500, what="later batches to be committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    stored = stored_events(path)
    assert len(stored) >= 2500 and len(stored) % 100 == 0  # whole transactions only
    assert [e.message for e in stored] == [f"line {i}" for i in range(len(stored))]
    writer = _writer(path)
    writer.write(rows(Event("log", "after restart")))
    writer.close()
    assert stored_events(path)[-1].message == "after restart"


class _Blocks:
    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def write(self, block: bytes) -> None:
        assert block.endswith(b"\n")
        self.rows.extend(block.split(b"\n")[:-1])


@pytest.mark.parametrize("read_size", [writer_module.READ_SIZE, 3])  # 3: rows span reads
def test_the_read_loop_keeps_whole_lines_and_drops_a_row_cut_short(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, read_size: int
) -> None:
    monkeypatch.setattr(writer_module, "READ_SIZE", read_size)
    read, write = os.pipe()
    os.write(write, b'[1,"a"]\n[2,')
    os.write(write, b'"b"]\n[3,"c')  # serve killed in the middle of this row
    os.close(write)
    blocks = _Blocks()
    pump(read, blocks)  # type: ignore[arg-type]
    os.close(read)
    assert blocks.rows == [b'[1,"a"]', b'[2,"b"]']
    assert "dropped a row cut short (5 bytes)" in capfd.readouterr().err


def test_the_trim_reads_the_id_bounds_without_scanning_the_table(tmp_path: Path) -> None:
    # Every batch asks for the oldest and newest ids: a full scan there made the store's cost per event
    # grow with its size.
    writer = _writer(tmp_path / "events.db")
    writer.write(rows(*(Event("log", f"line {i}") for i in range(10))))
    assert writer._conn is not None
    plan = writer._conn.execute(f"EXPLAIN QUERY PLAN {writer_module._BOUNDS}").fetchall()
    writer.close()
    details = [row[-1] for row in plan]
    assert "SEARCH events" in details and not [d for d in details if d.startswith("SCAN events")], details


class _TimedBlocks(_Blocks):
    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[float, int]] = []  # (when, rows)

    def write(self, block: bytes) -> None:
        super().write(block)
        self.blocks.append((time.monotonic(), block.count(b"\n")))


def test_the_read_loop_commits_at_most_once_an_interval_and_a_lone_row_at_once() -> None:
    read, write = os.pipe()
    blocks = _TimedBlocks()
    pumping = threading.Thread(target=pump, args=(read, blocks, 0.5), daemon=True)
    pumping.start()
    sent = time.monotonic()
    os.write(write, b'[1,"a"]\n')
    wait_until(lambda: blocks.blocks, 5, what="the first row written")
    assert blocks.blocks[0][0] - sent < 0.4  # nothing written for a while: written at once
    for i in range(2, 6):  # four rows within the interval that follows: one write
        os.write(write, f'[{i},"b"]\n'.encode())
    wait_until(lambda: len(blocks.blocks) == 2, 5, what="the second write")
    (first, _), (second, rows_in_second) = blocks.blocks
    assert rows_in_second == 4 and second - first >= 0.45
    os.close(write)
    pumping.join(5)
    os.close(read)
    assert len(blocks.rows) == 5 and not pumping.is_alive()
