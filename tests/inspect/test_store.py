"""The store's read side in-process: every filter over events kept in batches, id ranges across batches."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecli.events import LEVELS, Event
from edgecli.inspect.store import EventQuery, EventReader
from edgecli.store import StoreWriter

pytestmark = pytest.mark.timeout(30)

FUNCTIONS = ["hello", "café", "写真", 'quo"te', "back\\slash"]
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
    """The events in batches of 37 (one write each), so that every query crosses batch boundaries."""
    path = tmp_path_factory.mktemp("store") / "events.db"
    writer = StoreWriter(path, retention=10_000)
    for start in range(0, len(EVENTS), 37):
        writer.emit_lines(b"".join(event.to_row_json() + b"\n" for event in EVENTS[start : start + 37]))
        assert writer.flush()
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
    writer = StoreWriter(path, retention=100)
    writer.emit(Event("log", "first", function="fn"))
    writer.close()
    kept = Event("log", "kept", function="fn").to_row_json().decode()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO event_batches (first, last, rows) VALUES (?, ?, ?)",
            [
                (2, 4, f'["fn",\n[1, 2],\n{kept}]'),  # JSON, but two rows are not events'
                (5, 6, f"[not json,\n{kept}]"),
                (7, 8, f'[1, "fn",\n{kept}]'),  # a line holding two values
            ],
        )
    expected = [(1, "first"), (4, "kept"), (6, "kept"), (8, "kept")]
    with EventReader(path) as reader:
        for query in (EventQuery(), EventQuery(function="fn"), EventQuery(min_level="info")):
            assert [(i, e.message) for i, e in reader.all(query)] == expected, query
            # Unfiltered, the newest N ids are shown (7 is not an event's row): as with `LIMIT N` in SQL.
            newest = expected[-1:] if query == EventQuery() else expected[-2:]
            assert [(i, e.message) for i, e in reader.newest(query, 2)] == newest, query
            assert [(i, e.message) for i, e in reader.between(query, 3, 7)] == expected[1:3], query


def test_since_reads_only_batches_written_since_then(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    now = time.time()
    writer = StoreWriter(path, retention=100)
    writer.emit(Event("log", "recent", ts=now))
    writer.close()
    claims_later = Event("log", "claims later", ts=now).to_row_json().decode()
    with sqlite3.connect(path) as conn:  # written an hour ago: its event cannot be from later on
        conn.execute(
            "INSERT INTO event_batches (first, last, stored, rows) VALUES (2, 2, ?, ?)",
            (now - 3600, f"[{claims_later}]"),
        )
    with EventReader(path) as reader:
        for since, expected in ((None, ["recent", "claims later"]), (now - 600, ["recent"])):
            assert [e.message for _, e in reader.all(EventQuery(since=since))] == expected
            assert [e.message for _, e in reader.newest(EventQuery(since=since), 10)] == expected
