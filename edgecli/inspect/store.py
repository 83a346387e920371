"""The read side of the event store: filtered queries for `logs`, `tasks` and `invoke --wait`.

Readers open their own connection and only SELECT, so they work while `edgecli serve` writes (WAL lets
readers and the one writer proceed side by side) and after it stopped or was killed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecli.errors import EdgecliError
from edgecli.events import LEVELS, Event
from edgecli.store import COLUMNS, connect_store, rows_to_events

# The largest code point: `prefix <= id < prefix + TOP` selects every id starting with `prefix`, and the
# index on the column can serve the range.
_TOP = "\U0010ffff"


class NoStoreError(EdgecliError):
    """No event store yet: `edgecli serve` has never run in this project."""


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

    def _id_clause(self, column: str, value: str, params: list[Any]) -> str:
        if self.exact_ids:
            params.append(value)
            return f"{column} = ?"
        params += [value, value + _TOP]
        return f"({column} >= ? AND {column} < ?)"

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.function is not None:
            clauses.append("function = ?")
            params.append(self.function)
        if self.request is not None:
            request_clause = self._id_clause("request", self.request, params)
            if self.or_tasks:
                request_clause = f"({request_clause} OR task IN ({', '.join('?' * len(self.or_tasks))}))"
                params += self.or_tasks
            clauses.append(request_clause)
        if self.task is not None:
            clauses.append(self._id_clause("task", self.task, params))
        if self.min_level is not None:
            allowed = LEVELS[LEVELS.index(self.min_level) :]
            clauses.append(f"level IN ({', '.join('?' * len(allowed))})")
            params += allowed
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.kinds:
            clauses.append(f"kind IN ({', '.join('?' * len(self.kinds))})")
            params += self.kinds
        return (" AND ".join(clauses) or "1"), params


StoredEvent = tuple[int, Event]  # (store id: insertion order, event)


class EventReader:
    """A read-only view of the store at `path`; raises NoStoreError when there is none yet."""

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
        where, params = query.where()
        if upto_id is not None:
            where, params = f"id <= ? AND {where}", [upto_id, *params]
        rows = self._select(f"WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        rows.reverse()
        return rows

    def between(self, query: EventQuery, after_id: int, upto_id: int) -> list[StoredEvent]:
        """Events matching `query` with `after_id < id <= upto_id`, oldest first (follow mode polls this)."""
        where, params = query.where()
        return self._select(f"WHERE id > ? AND id <= ? AND {where} ORDER BY id", [after_id, upto_id, *params])

    def all(self, query: EventQuery) -> list[StoredEvent]:
        where, params = query.where()
        return self._select(f"WHERE {where} ORDER BY id", params)

    def resolve_ids(self, query: EventQuery) -> EventQuery:
        """Ids match exactly when the store holds them as given, else as prefixes (ids print shortened):
        `--task w1.t-1` must not also match w1.t-10."""
        given = [
            (column, value) for column, value in (("request", query.request), ("task", query.task)) if value
        ]
        if query.exact_ids or not given:
            return query
        if all(self._has(column, value) for column, value in given):
            return replace(query, exact_ids=True)
        return query

    def _has(self, column: str, value: str) -> bool:
        return (
            self._execute(f"SELECT 1 FROM events WHERE {column} = ? LIMIT 1", [value]).fetchone() is not None
        )

    def last_id(self) -> int:
        row = self._execute("SELECT max(id) FROM events", []).fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _select(self, tail: str, params: list[Any]) -> list[StoredEvent]:
        cursor = self._execute(f"SELECT {COLUMNS} FROM events {tail}", params)
        return rows_to_events(cursor.fetchall())

    def _execute(self, sql: str, params: list[Any]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise EdgecliError(
                f"Could not read the event store {self.path} ({exc}). If it stays unreadable, delete it: "
                "it only holds past logs and `edgecli serve` creates a fresh one."
            ) from None
