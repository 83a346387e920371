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
from typing import Any

from edgecli.errors import EdgecliError
from edgecli.events import LEVELS, Event
from edgecli.store.schema import FileId, file_id, open_reader, unreadable


class NoStoreError(EdgecliError):
    """No event store yet: `edgecli serve` has never run in this project."""


StoredEvent = tuple[int, Event]  # (store id: commit order, event)
_SELECT = "SELECT id, ts, kind, function, worker, request, task, level, message, extra FROM events"


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
