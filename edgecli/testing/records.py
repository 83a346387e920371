"""What a test server recorded: serve's event records, one JSON object per line of `serve --json`.

This is the one place `edgecli.testing` reads events. serve prints each record at the end of the loop
pass that made it, so a request's records (its log lines and task starts, then its `request` summary,
which the relay emits once the response is complete) are here moments after the response. The event
store batches its writes, so it is not read: waiting for it would cost every test its flush interval.

Records are kept per *scope* (one test): `begin_scope` forgets what came before, and records of requests
seen before it (a previous test's leftover tasks) are dropped as they arrive.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Record = dict[str, Any]
LEVELS = ("debug", "info", "warning", "error")
FILTERS = ("function", "request", "task", "level", "kind")
_KEPT_LINES = 200  # serve's non-JSON output kept for error messages


@dataclass(frozen=True)
class TaskResult:
    """One background task of a request, as `edgecli tasks` shows it."""

    name: str  # the coroutine's or callable's __qualname__
    status: str  # running | completed | failed | cancelled
    duration_ms: float | None
    error: str | None  # the traceback of a failed task
    reason: str | None  # why a cancelled task was cut off (termination, wall_clock, ...)
    task: str  # the task id


@dataclass
class _Task:
    request: str | None
    name: str
    end: Record | None = None

    def result(self, task: str) -> TaskResult:
        end = self.end or {}
        return TaskResult(
            name=str(end.get("name") or self.name),
            status=str(end.get("status") or "failed") if self.end else "running",
            duration_ms=end.get("duration_ms"),
            error=end.get("error"),
            reason=end.get("reason"),
            task=task,
        )


class EventLog:
    """Records fed line by line (from serve's stdout, on a reader thread), read by the test's thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._records: list[Record] = []  # this scope's, in arrival order
        self._by_request: dict[str, list[Record]] = {}
        self._tasks: dict[str, _Task] = {}  # this scope's, in start order
        self._task_request: dict[str, str | None] = {}  # every task seen: its request
        self._done: set[str] = set()  # requests whose `request` record arrived
        self._old: set[str] = set()  # requests of earlier scopes
        self._closed = False
        self.output: deque[str] = deque(maxlen=_KEPT_LINES)

    # -- the writing side --------------------------------------------------------------------------------

    def feed(self, line: str) -> None:
        record = _parse(line)
        with self._cond:
            if record is None:
                self.output.append(line.rstrip("\n"))
                return
            self._add(record)
            self._cond.notify_all()

    def close(self) -> None:
        """serve's output ended: nothing more will come, so nobody should wait for it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _add(self, record: Record) -> None:
        task = record.get("task")
        request = record.get("request") or self._task_request.get(task or "")
        if task and task not in self._task_request:
            self._task_request[task] = request
        if request in self._old:
            return
        self._records.append(record)
        if request:
            self._by_request.setdefault(request, []).append(record)
        kind = record.get("kind")
        if kind == "request" and request:
            self._done.add(request)
        elif kind in ("task_start", "task_end") and task:
            entry = self._tasks.setdefault(task, _Task(request, str(record.get("name") or "?")))
            if kind == "task_end":
                entry.end = record

    # -- scopes ------------------------------------------------------------------------------------------

    def begin_scope(self) -> None:
        with self._cond:
            self._old.update(self._by_request)
            self._old.update(request for request in self._task_request.values() if request)
            self._records, self._by_request, self._tasks = [], {}, {}
            self._done.clear()

    # -- the reading side --------------------------------------------------------------------------------

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition()` holds (checked under the lock), serve's output ends, or `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return condition()
                self._cond.wait(left)
            return True

    def answered(self, requests: Iterable[str]) -> Callable[[], bool]:
        """A condition: every one of `requests` has its `request` record."""
        wanted = list(requests)
        return lambda: all(request in self._done for request in wanted)

    def settled(self, request: str) -> Callable[[], bool]:
        """A condition: the request is answered and every task it started has ended."""
        return lambda: (
            request in self._done
            and all(t.end is not None for t in self._tasks.values() if t.request == request)
        )

    def quiet(self) -> Callable[[], bool]:
        """A condition: no task of this scope is running."""
        return lambda: all(t.end is not None for t in self._tasks.values())

    def tasks(self, request: str | None = None) -> list[TaskResult]:
        """The tasks of `request` (of the whole scope with None), in the order they started."""
        with self._cond:
            return [
                entry.result(task)
                for task, entry in self._tasks.items()
                if request is None or entry.request == request
            ]

    def running_at(self, ts: float) -> list[TaskResult]:
        """This scope's tasks that were still running at `ts` (epoch seconds), as far as is known now.

        A task the platform cut off afterwards (cancelled on `termination`: oneshot ends the instance
        once the response is sent) was not left running by the test, so it does not count."""
        with self._cond:
            return [
                entry.result(task)
                for task, entry in self._tasks.items()
                if entry.end is None or (_ended_after(entry.end, ts) and not _cut_off(entry.end))
            ]

    def of_request(self, request: str) -> list[Record]:
        with self._cond:
            return list(self._by_request.get(request, ()))

    def known(self, request: str) -> bool:
        with self._cond:
            return request in self._by_request

    def select(self, **filters: Any) -> list[Record]:
        """This scope's records passing every filter (those of `edgecli logs`, plus `kind`)."""
        test = _record_test(filters)
        with self._cond:
            return [record for record in self._records if test(record)]


def _parse(line: str) -> Record | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "kind" in record else None


def _ended_after(end: Record, ts: float) -> bool:
    stamp = end.get("ts")
    if not isinstance(stamp, str):
        return True
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() > ts


def _cut_off(end: Record) -> bool:
    return end.get("status") == "cancelled" and end.get("reason") == "termination"


def _record_test(filters: dict[str, Any]) -> Callable[[Record], bool]:
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise TypeError(f"events() got unknown filters {unknown}; it takes: {', '.join(FILTERS)}")
    wanted = {key: value for key, value in filters.items() if value is not None}
    level = wanted.pop("level", None)
    if level is not None and level not in LEVELS:
        raise ValueError(f"events(level={level!r}): use one of {', '.join(LEVELS)}")
    allowed = LEVELS[LEVELS.index(level) :] if level else LEVELS

    def test(record: Record) -> bool:
        if level is not None and record.get("level") not in allowed:
            return False
        return all(record.get(key) == value for key, value in wanted.items())

    return test
