"""The store's read side in-process: every filter, id ranges, rows put there by hand, damaged and
replaced files."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from serving import rows

from edgecli.events import LEVELS, Event
from edgecli.store.reader import EventQuery, EventReader, NoStoreError
from edgecli.store.schema import StoreError
from edgecli.store.writer import StoreWriter

pytestmark = pytest.mark.timeout(30)

FUNCTIONS = ["hello", "café", "写真", 'quo"te', "back\\slash", "gl*b?[x]"]
KINDS = ["log", "request", "task_start", "task_end"]


def _event(i: int) -> Event:
    return Event(
        KINDS[i % len(KINDS)],
        f'message {i} mentions hello and "error" and w1.t-1',  # needles inside messages match nothing
        function=FUNCTIONS[i % len(FUNCTIONS)],
        worker="w1",
        request=f"r{i % 12}" if i % 3 else None,
        task=f"w1.t-{i % 11}" if i % 2 else None,
        level=LEVELS[i % len(LEVELS)],
        ts=1000.0 + i,
    )


EVENTS = [_event(i) for i in range(600)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The events in writes of 37 (one transaction each)."""
    path = tmp_path_factory.mktemp("store") / "events.db"
    writer = StoreWriter(path, 10_000, 1 << 30)
    for start in range(0, len(EVENTS), 37):
        writer.write(rows(*EVENTS[start : start + 37]))
    writer.close()
    return path


def _prefix(value: str | None, prefix: str) -> bool:
    return value is not None and value.startswith(prefix)


QUERIES: list[tuple[EventQuery, Callable[[Event], bool]]] = [
    (EventQuery(), lambda e: True),
    (EventQuery(function="café"), lambda e: e.function == "café"),
    (EventQuery(function="写真"), lambda e: e.function == "写真"),
    (EventQuery(function='quo"te'), lambda e: e.function == 'quo"te'),
    (EventQuery(function="back\\slash"), lambda e: e.function == "back\\slash"),
    (EventQuery(function="hell"), lambda e: False),  # functions match exactly
    (EventQuery(function="gl*b?[x]"), lambda e: e.function == "gl*b?[x]"),
    (EventQuery(request="r1"), lambda e: _prefix(e.request, "r1")),  # r1, r10, r11
    (EventQuery(request="r1", exact_ids=True), lambda e: e.request == "r1"),
    (EventQuery(task="w1.t-1", exact_ids=True), lambda e: e.task == "w1.t-1"),
    (EventQuery(task="w1.t-1"), lambda e: _prefix(e.task, "w1.t-1")),
    (
        EventQuery(request="r2", or_tasks=("w1.t-3", "w1.t-5"), exact_ids=True),
        lambda e: e.request == "r2" or e.task in ("w1.t-3", "w1.t-5"),
    ),
    (EventQuery(min_level="warning"), lambda e: e.level in ("warning", "error")),
    (EventQuery(min_level="debug"), lambda e: True),
    (EventQuery(since=1500.0), lambda e: e.ts >= 1500.0),
    (EventQuery(kinds=("task_start", "task_end")), lambda e: e.kind.startswith("task_")),
    (
        EventQuery(function="hello", min_level="error", kinds=("log",), since=1100.0),
        lambda e: e.function == "hello" and e.level == "error" and e.kind == "log" and e.ts >= 1100.0,
    ),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_every_filter_selects_what_it_says_across_batches(
    store: Path, query: EventQuery, expected: Callable[[Event], bool]
) -> None:
    wanted = [(i, e) for i, e in enumerate(EVENTS, start=1) if expected(e)]
    with EventReader(store) as reader:
        assert reader.all(query) == wanted
        assert reader.newest(query, 25) == wanted[-25:]
        assert reader.newest(query, 25, upto_id=300) == [(i, e) for i, e in wanted if i <= 300][-25:]
        assert reader.between(query, 100, 450) == [(i, e) for i, e in wanted if 100 < i <= 450]


def test_ids_are_numbered_in_order_across_batches(store: Path) -> None:
    with EventReader(store) as reader:
        assert reader.last_id() == len(EVENTS)
        assert reader.newest(EventQuery(), 3, upto_id=38) == [
            (36, EVENTS[35]),
            (37, EVENTS[36]),
            (38, EVENTS[37]),
        ]
        assert reader.between(EventQuery(), 36, 38) == [(37, EVENTS[36]), (38, EVENTS[37])]
        assert reader.newest(EventQuery(), 10_000) == list(enumerate(EVENTS, start=1))


def test_ids_resolve_exactly_when_stored_as_given(store: Path) -> None:
    with EventReader(store) as reader:
        assert reader.resolve_ids(EventQuery(task="w1.t-1")).exact_ids
        assert not reader.resolve_ids(EventQuery(task="w1.t-")).exact_ids  # only a prefix of ids
        assert not reader.resolve_ids(EventQuery(request="r1", task="nope")).exact_ids


def test_rows_put_there_by_hand_cost_readers_only_themselves(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, 100, 1 << 30)
    writer.write(rows(Event("log", "first", function="fn")))
    writer.close()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO events (ts, kind, function, level, message, extra) "
            "VALUES (?, 'log', 'fn', 'info', ?, ?)",
            [
                (1.0, "bad extra", "{not json"),
                (2.0, "a list", "[1, 2]"),
                ("noon", "text ts", None),
                (3.0, "kept", "{}"),
            ],
        )
    with EventReader(path) as reader:
        for query in (EventQuery(), EventQuery(function="fn"), EventQuery(min_level="info")):
            assert [(i, e.message) for i, e in reader.all(query)] == [(1, "first"), (5, "kept")], query
            assert [(i, e.message) for i, e in reader.between(query, 1, 5)] == [(5, "kept")], query


def test_no_store_yet_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(NoStoreError, match="Start `edgecli serve`"):
        EventReader(tmp_path / "events.db")


def _damage(path: Path) -> None:
    """Flip bytes in the second half's pages (the schema stays readable), as a bad disk would."""
    data = bytearray(path.read_bytes())
    for page in range(len(data) // 8192 * 4096, len(data), 4096):
        data[page + 200 : page + 400] = bytes(200)
        data[page + 8 : page + 12] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


def test_a_damaged_store_is_a_one_paragraph_error_for_every_query(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, 100_000, 1 << 30)
    writer.write(rows(*(Event("task_start", "x" * 100, function="fn", task=f"t{i}") for i in range(3000))))
    writer.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(path)
    with EventReader(path) as reader:
        for read in (
            lambda: reader.newest(EventQuery(), 1_000_000),
            lambda: reader.all(EventQuery(kinds=("task_start", "task_end"))),
            lambda: reader.all(EventQuery(function="fn")),
        ):
            with pytest.raises(StoreError, match=r"Could not read the event store .*delete it") as info:
                read()
            assert "\n" not in str(info.value)


def test_a_reader_follows_a_store_made_afresh(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = StoreWriter(path, 100, 1 << 30, report=lambda message: None)
    writer.write(rows(Event("log", "old 1"), Event("log", "old 2")))
    with EventReader(path) as reader:
        assert reader.last_id() == 2 and not reader.replaced()
        path.unlink()
        assert not reader.replaced()  # gone, nothing in its place yet: keep reading the old file
        writer.write(rows(Event("log", "new")))  # serve notices, and starts a fresh store
        assert reader.replaced()
        assert [(i, e.message) for i, e in reader.between(EventQuery(), 0, reader.last_id())] == [(1, "new")]
    writer.close()
