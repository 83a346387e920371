"""The read side of the event store: filtered queries for `logs`, `tasks` and `invoke --wait`.

Readers open their own read-only connection and run ordinary SQL, so they work while any number of
`edgecli serve`s write (WAL lets readers and writers proceed side by side) and after they stopped.
Ids only grow and a transaction's rows appear all at once, so following the store is asking for the
rows past the last id seen.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from edgecli.errors import EdgecliError
from edgecli.events import LEVELS, TASK_KINDS, Event
from edgecli.store.schema import FileId, file_id, open_reader, unreadable


class NoStoreError(EdgecliError):
    """No event store yet: `edgecli serve` has never run in this project."""


StoredEvent = tuple[int, Event]  # (store id: commit order, event)
_SELECT = "SELECT id, ts, kind, function, worker, request, task, level, message, extra FROM events"
# The rows `_stored` makes an event of: a number for a time and a JSON object (or nothing) for fields.
# CASE rather than AND: json_type fails on text that is not JSON, and SQLite may evaluate either side.
_WELL_FORMED = (
    "typeof(ts) IN ('integer', 'real') AND coalesce(extra, '') = '' OR "
    "typeof(ts) IN ('integer', 'real') AND CASE WHEN json_valid(extra) THEN json_type(extra) = 'object' END"
)
# One row per task: its last start and last end side by side, with only the fields of theirs a task's
# summary reads (json_extract runs in SQLite, on those two rows alone), and whether they are all its
# events. So `tasks` makes a task of each row rather than fetching and decoding every task event.
_TASKS = """
WITH task_events AS ({events}),
folded AS (
    SELECT
        task,
        min(id) AS first_id,
        count(*) = count(DISTINCT kind) AS whole,
        max(CASE WHEN kind = 'task_start' THEN id END) AS start_id,
        max(CASE WHEN kind = 'task_end' THEN id END) AS end_id
    FROM task_events GROUP BY task
)
SELECT
    first_id, folded.task, whole,
    s.id, s.ts, s.function, s.worker, s.request, json_extract(s.extra, '$.name'),
    e.id, e.ts, e.function, e.worker, e.request, json_extract(e.extra, '$.name'),
    json_extract(e.extra, '$.status'), json_extract(e.extra, '$.duration_ms'),
    json_extract(e.extra, '$.error'), json_extract(e.extra, '$.reason')
FROM folded
LEFT JOIN events AS s ON s.id = start_id
LEFT JOIN events AS e ON e.id = end_id
ORDER BY first_id
"""
# The tasks with more than one start or end (an id that a later serve gave again): all their events.
_REPEATED = "task IN (SELECT task FROM ({events}) GROUP BY task HAVING count(*) > count(DISTINCT kind))"


class TaskRow(NamedTuple):
    """A task with one start and one end (or either alone), the fields of each a summary reads."""

    first_id: int
    task: str
    start_id: int | None
    started: float | None
    start_function: str | None
    start_worker: str | None
    start_request: str | None
    start_name: Any
    end_id: int | None
    ended: float | None
    end_function: str | None
    end_worker: str | None
    end_request: str | None
    end_name: Any
    status: Any
    duration_ms: Any
    error: Any
    reason: Any


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

    def where(self) -> tuple[list[str], list[Any]]:
        """The query as SQL conditions (to AND together) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.function is not None:
            clauses.append("function = ?")
            params.append(self.function)
        if self.request is not None:
            by_request, value = self._id_match("request", self.request)
            if self.or_tasks:
                by_request = f"({by_request} OR task IN ({_marks(self.or_tasks)}))"
            clauses.append(by_request)
            params += [value, *self.or_tasks]
        if self.task is not None:
            clause, value = self._id_match("task", self.task)
            clauses.append(clause)
            params.append(value)
        if self.min_level is not None and self.min_level != LEVELS[0]:
            levels = LEVELS[LEVELS.index(self.min_level) :]
            clauses.append(f"level IN ({_marks(levels)})")
            params += levels
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.kinds:
            clauses.append(f"kind IN ({_marks(self.kinds)})")
            params += self.kinds
        return clauses, params

    def _id_match(self, column: str, value: str) -> tuple[str, str]:
        if self.exact_ids:
            return f"{column} = ?", value
        # GLOB, not LIKE: case-sensitive, so SQLite can use the column's index for the prefix.
        return f"{column} GLOB ?", _glob_escape(value) + "*"


def _marks(values: tuple[Any, ...]) -> str:
    return ", ".join("?" * len(values))


def _glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


class EventReader:
    """A read-only view of the store at `path`; raises NoStoreError when there is none yet, and
    StoreError (one paragraph) when the file is not a store this edgecli reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: FileId | None = file_id(path)
        if self._file is None:
            raise NoStoreError(
                f"No events recorded yet: there is no event store at {path}. Start `edgecli serve` in this "
                "project (it records every request, task and log line there), then try again."
            )
        self._conn = open_reader(path)

    def newest(self, query: EventQuery, limit: int, upto_id: int | None = None) -> list[StoredEvent]:
        """The newest `limit` events matching `query` (up to `upto_id`), oldest first."""
        clauses, params = query.where()
        if upto_id is not None:
            clauses.append("id <= ?")
            params.append(upto_id)
        found = self._select(clauses, params, "ORDER BY id DESC LIMIT ?", [limit])
        found.reverse()
        return found

    def between(self, query: EventQuery, after_id: int, upto_id: int) -> list[StoredEvent]:
        """Events matching `query` with `after_id < id <= upto_id`, oldest first (follow mode polls this)."""
        clauses, params = query.where()
        return self._select([*clauses, "id > ?", "id <= ?"], [*params, after_id, upto_id], "ORDER BY id")

    def all(self, query: EventQuery) -> list[StoredEvent]:
        clauses, params = query.where()
        return self._select(clauses, params, "ORDER BY id")

    def tasks(self, query: EventQuery) -> tuple[list[TaskRow], list[StoredEvent]]:
        """The tasks of the task_start / task_end events matching `query`: a row for each with one start
        and one end (or either alone), in the order they began, and every event of the others."""
        clauses, params = replace(query, kinds=TASK_KINDS).where()
        where = " AND ".join([*clauses, "task IS NOT NULL", f"({_WELL_FORMED})"])
        events = f"SELECT id, task, kind FROM events WHERE {where}"
        try:
            rows = self._conn.execute(_TASKS.format(events=events), params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None
        whole = [TaskRow._make(row[:2] + row[3:]) for row in rows if row[2]]
        if len(whole) == len(rows):
            return whole, []
        return whole, self._select(
            [*clauses, _REPEATED.format(events=events)], [*params, *params], "ORDER BY id"
        )

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
        if all(self.newest(probe, 1) for probe in given):
            return replace(query, exact_ids=True)
        return query

    def last_id(self) -> int:
        """The id of the newest event (0 when there is none)."""
        try:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None

    def replaced(self) -> bool:
        """Whether the path now names another file than the one read (deleted and made afresh by serve,
        say); if so, and the new one is there, read that one from now on (its ids start again)."""
        now = file_id(self.path)
        if now == self._file or now is None:
            return False
        self._conn.close()
        self._conn = open_reader(self.path)
        self._file = now
        return True

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _select(
        self, clauses: list[str], params: list[Any], tail: str, more: list[Any] | None = None
    ) -> list[StoredEvent]:
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        try:
            rows = self._conn.execute(f"{_SELECT}{where} {tail}", [*params, *(more or [])]).fetchall()
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None
        return [stored for row in rows if (stored := _stored(row)) is not None]


def _stored(row: tuple[Any, ...]) -> StoredEvent | None:
    """A row as (id, Event); None for one that is not an event's (put there by hand, say)."""
    event_id, ts, kind, function, worker, request, task, level, message, extra = row
    try:
        fields = json.loads(extra) if extra else {}
    except ValueError:
        return None
    if not isinstance(fields, dict) or not isinstance(ts, int | float):
        return None
    event = Event(kind, message, level, function, worker, request, task, ts, fields)
    return event_id, event
