"""The read side of the event store: filtered queries for `logs`, `tasks` and `invoke --wait`.

Readers open their own connection and only SELECT, so they work while `edgecli serve` writes (WAL lets
readers and the one writer proceed side by side) and after it stopped or was killed.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from edgecli.compact_json import encode_json
from edgecli.errors import EdgecliError
from edgecli.events import LEVELS, Event
from edgecli.store import (
    ROW_LENGTH,
    batch_lines,
    batch_rows,
    connect_store,
    decode_lines,
    last_event_id,
    rows_to_events,
)


class NoStoreError(EdgecliError):
    """No event store yet: `edgecli serve` has never run in this project."""


RowTest = Callable[[list[Any]], bool]  # on an event's row as stored (Event.to_row order)
StoredEvent = tuple[int, Event]  # (store id: insertion order, event)
Batch = tuple[int, int, str]  # (first id, last id, rows) as stored
_TS, _KIND, _FUNCTION, _REQUEST, _TASK, _LEVEL = 0, 1, 2, 4, 5, 6  # places in a stored row
_NEWEST_PAGE = 16  # batches fetched at a time while looking back for the newest events
# How far back the clock may have been set between an event and the write of its batch, for `since`
# to still find it: a batch written before `since` minus this is not read.
CLOCK_SLACK_S = 60.0


@dataclass(frozen=True)
class EventQuery:
    """Filters that combine (AND). Request and task ids match exactly or by prefix (ids print short)."""

    function: str | None = None
    request: str | None = None
    task: str | None = None
    min_level: str | None = None
    since: float | None = None  # epoch seconds
    kinds: tuple[str, ...] = ()
    # Widens the `request` filter: also events of these tasks (log lines of tasks spawned by the request).
    or_tasks: tuple[str, ...] = ()
    exact_ids: bool = False  # `invoke --wait` knows the full request id: no prefix matching

    # Built once per query (not per batch read): cached_property stores into the instance's __dict__,
    # which a frozen dataclass allows.
    @cached_property
    def row_test(self) -> RowTest:
        """A test of one stored row: does its event pass every filter?"""
        tests: list[RowTest] = []
        if self.function is not None:
            tests.append(_equals(_FUNCTION, self.function))
        if self.request is not None:
            by_request = self._id_test(_REQUEST, self.request)
            if self.or_tasks:
                tasks = frozenset(self.or_tasks)
                tests.append(lambda row: by_request(row) or row[_TASK] in tasks)
            else:
                tests.append(by_request)
        if self.task is not None:
            tests.append(self._id_test(_TASK, self.task))
        if self.min_level is not None:
            allowed = frozenset(self._levels())
            tests.append(lambda row: row[_LEVEL] in allowed)
        if self.since is not None:
            since = self.since
            tests.append(lambda row: isinstance(row[_TS], int | float) and row[_TS] >= since)
        if self.kinds:
            kinds = frozenset(self.kinds)
            tests.append(lambda row: row[_KIND] in kinds)
        if len(tests) == 1:  # the common case, without a loop per row
            (test,) = tests
            return lambda row: len(row) == ROW_LENGTH and test(row)
        return lambda row: len(row) == ROW_LENGTH and all(test(row) for test in tests)

    def needles(self) -> list[tuple[str, ...]]:
        """Text a stored row must hold to match: one of each group, as the strings the filters need
        are encoded in it (every character on its own, so an id's prefix encodes as the start of the
        id's encoding). Checking for them is a substring search: it spares readers decoding most rows
        (and batches) that cannot match; `row_test` decides on the rest."""
        groups: list[tuple[str, ...]] = []
        if self.function is not None:
            groups.append((encode_json(self.function),))
        if self.request is not None:
            groups.append((self._needle(self.request), *map(encode_json, self.or_tasks)))
        if self.task is not None:
            groups.append((self._needle(self.task),))
        if self.min_level is not None and self.min_level != LEVELS[0]:
            groups.append(tuple(map(encode_json, self._levels())))
        if self.kinds:
            groups.append(tuple(map(encode_json, self.kinds)))
        return groups

    def batch_filter(self) -> tuple[str, list[Any]]:
        """SQL on `event_batches` keeping the batches whose text holds every group of `needles`, and
        with `since`, those written since then (an event is written after it happens)."""
        groups = self.needles()
        clauses = ["(" + " OR ".join(["instr(rows, ?) > 0"] * len(group)) + ")" for group in groups]
        params: list[Any] = [needle for group in groups for needle in group]
        if self.since is not None:
            clauses.append("(stored IS NULL OR stored >= ?)")
            params.append(self.since - CLOCK_SLACK_S)
        return (" AND ".join(clauses) or "1"), params

    @cached_property
    def line_test(self) -> Callable[[str], bool] | None:
        """The same on one row's text; None when there is nothing to look for."""
        # One test per group, each a single call into C.
        tests = [re.compile("|".join(map(re.escape, group))).search for group in self.needles()]
        if not tests:
            return None
        if len(tests) == 1:  # the common case, without a loop per row
            return tests[0]  # type: ignore[return-value]
        return lambda line: all(test(line) for test in tests)

    def _levels(self) -> tuple[str, ...]:
        return LEVELS[LEVELS.index(self.min_level or LEVELS[0]) :]

    def _id_test(self, column: int, value: str) -> RowTest:
        if self.exact_ids:
            return _equals(column, value)
        return lambda row: isinstance(row[column], str) and row[column].startswith(value)

    def _needle(self, value: str) -> str:
        return encode_json(value) if self.exact_ids else encode_json(value)[:-1]


def _passes(test: RowTest, row: list[Any]) -> bool:
    try:  # TypeError: a row holding a list where an id belongs (put there by hand?)
        return test(row)
    except TypeError:
        return False


def _equals(column: int, value: str) -> RowTest:
    return lambda row: row[column] == value


class EventReader:
    """A read-only view of the store at `path`; raises NoStoreError when there is none yet.

    Events are stored in batches (edgecli/store.py): every query selects the batches that may hold a
    match by id range and `EventQuery.batch_filter`, and unpacks and tests their rows here."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise NoStoreError(
                f"No events recorded yet: there is no event store at {path}. Start `edgecli serve` in this "
                "project (it records every request, task and log line there), then try again."
            )
        self.path = path
        self._conn = connect_store(path, create=False)

    def newest(self, query: EventQuery, limit: int, upto_id: int | None = None) -> list[StoredEvent]:
        """The newest `limit` events matching `query` (up to `upto_id`), oldest first."""
        upto = upto_id if upto_id is not None else self.last_id()
        # Unfiltered, the newest `limit` ids are the answer: rows older than those need no decoding.
        after = upto - limit if query == EventQuery(exact_ids=query.exact_ids) else 0
        found: list[StoredEvent] = []
        cursor = self._batches(query, "first <= ? AND last > ?", [upto, after], "last DESC")
        while len(found) < limit and (page := cursor.fetchmany(_NEWEST_PAGE)):
            for batch in page:
                found.extend(reversed(self._unpack(query, batch, after, upto)))
                if len(found) >= limit:
                    break
        del found[limit:]
        found.reverse()
        return found

    def between(self, query: EventQuery, after_id: int, upto_id: int) -> list[StoredEvent]:
        """Events matching `query` with `after_id < id <= upto_id`, oldest first (follow mode polls this)."""
        cursor = self._batches(query, "last > ? AND first <= ?", [after_id, upto_id], "last")
        return [stored for batch in cursor for stored in self._unpack(query, batch, after_id, upto_id)]

    def all(self, query: EventQuery) -> list[StoredEvent]:
        cursor = self._batches(query, "1", [], "last")
        return [stored for batch in cursor for stored in self._unpack(query, batch)]

    def resolve_ids(self, query: EventQuery) -> EventQuery:
        """Ids match exactly when the store holds them as given, else as prefixes (ids print shortened):
        `--task w1.t-1` must not also match w1.t-10."""
        probes = [
            EventQuery(request=query.request, exact_ids=True) if query.request else None,
            EventQuery(task=query.task, exact_ids=True) if query.task else None,
        ]
        given = [probe for probe in probes if probe is not None]
        if query.exact_ids or not given:
            return query
        if all(self._has(probe) for probe in given):
            return replace(query, exact_ids=True)
        return query

    def _has(self, query: EventQuery) -> bool:
        return any(self._unpack(query, batch) for batch in self._batches(query, "1", [], "last"))

    def last_id(self) -> int:
        try:
            return last_event_id(self._conn)
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batches(self, query: EventQuery, where: str, params: list[Any], order: str) -> sqlite3.Cursor:
        """(first id, last id, rows) of the batches in `where` that may hold a match, in `order`."""
        matching, more = query.batch_filter()
        sql = f"SELECT first, last, rows FROM event_batches WHERE {where} AND {matching} ORDER BY {order}"
        try:
            return self._conn.execute(sql, [*params, *more])
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None

    @staticmethod
    def _unpack(
        query: EventQuery, batch: Batch, after: int = 0, upto: int | None = None
    ) -> list[StoredEvent]:
        """The events of `batch` that match `query` with `after < id <= upto`, oldest first. Rows are
        only decoded if their text holds what the query looks for."""
        first, last, text = batch
        keep = query.line_test
        start = max(after + 1 - first, 0)
        stop = (last if upto is None else min(upto, last)) + 1 - first
        rows: list[Any] | None = None
        if keep is None and start == 0 and stop == last + 1 - first:  # every row: decoded at once
            rows = batch_rows(text)
            ids: range | list[int] = range(first, last + 1)
        if rows is None or len(rows) != len(ids):  # or the batch was not written by edgecli
            lines = batch_lines(text)
            picked = [i for i in range(start, min(stop, len(lines))) if keep is None or keep(lines[i])]
            ids = [first + i for i in picked]
            rows = decode_lines([lines[i] for i in picked])
        test = query.row_test
        return rows_to_events(
            ids, [row if type(row) is list and _passes(test, row) else None for row in rows]
        )

    def _unreadable(self, exc: sqlite3.DatabaseError) -> EdgecliError:
        return EdgecliError(
            f"Could not read the event store {self.path} ({exc}). If it stays unreadable, delete it: "
            "it only holds past logs and `edgecli serve` creates a fresh one."
        )
