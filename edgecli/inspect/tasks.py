"""`edgecli tasks`: background tasks rebuilt from their task_start / task_end events; `tasks show ID`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecli.console import Cell, Output, print_fields, print_table
from edgecli.errors import EdgecliError, UsageError
from edgecli.events import TASK_KINDS, TASK_STATUSES, Event, iso_ts
from edgecli.inspect.logs import store_path
from edgecli.printer import EventPrinter
from edgecli.render import error_line, fmt_duration, short_id
from edgecli.store.reader import EventQuery, EventReader, StoredEvent

STATUSES = ("running", *TASK_STATUSES)
_STATUS_TONE = {"running": "accent", "completed": "good", "failed": "bad", "cancelled": "warn"}


@dataclass(frozen=True)
class TasksArgs:
    function: str | None = None
    status: str | None = None
    request: str | None = None
    json_output: bool = False


@dataclass
class TaskSummary:
    task: str
    function: str | None = None
    name: str | None = None
    request: str | None = None
    worker: str | None = None
    status: str = "running"  # until its task_end arrives
    started: float | None = None
    ended: float | None = None
    duration_ms: float | None = None
    error: str | None = None
    reason: str | None = None

    def record(self) -> dict[str, Any]:
        """The `tasks --json` object (see docs/architecture.md, "Event records"): times as ISO 8601 UTC."""
        # Field by field rather than dataclasses.asdict, which deep-copies every value: on a store of
        # many tasks that copying was most of `tasks --json`'s time.
        return {
            "task": self.task,
            "function": self.function,
            "name": self.name,
            "request": self.request,
            "worker": self.worker,
            "status": self.status,
            "started": iso_ts(self.started) if self.started is not None else None,
            "ended": iso_ts(self.ended) if self.ended is not None else None,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "reason": self.reason,
        }


def summarize(events: Iterable[Event]) -> list[TaskSummary]:
    """Tasks in the order they started. A task whose task_start fell to retention is rebuilt from its end."""
    tasks: dict[str, TaskSummary] = {}
    for event in events:
        if event.task is None or event.kind not in TASK_KINDS:
            continue
        summary = tasks.get(event.task)
        if summary is None:  # not setdefault: that would build a summary for every event
            summary = tasks[event.task] = TaskSummary(event.task)
        summary.function = summary.function or event.function
        summary.worker = summary.worker or event.worker
        summary.request = summary.request or event.request
        summary.name = summary.name or event.fields.get("name")
        if event.kind == "task_start":
            summary.started = event.ts
            continue
        summary.status = str(event.fields.get("status") or "failed")
        summary.ended = event.ts
        summary.duration_ms = event.fields.get("duration_ms")
        summary.error = event.fields.get("error")
        summary.reason = event.fields.get("reason")
        if summary.started is None and summary.duration_ms is not None:
            summary.started = event.ts - summary.duration_ms / 1000
    return list(tasks.values())


def run(workdir: Path | None, args: TasksArgs, output: Output) -> int:
    if args.status is not None and args.status not in STATUSES:
        raise UsageError(f"--status {args.status!r} is not a task status. Use one of: {', '.join(STATUSES)}.")
    query = EventQuery(function=args.function, request=args.request, kinds=TASK_KINDS)
    with EventReader(store_path(workdir)) as reader:
        tasks = summarize(event for _, event in reader.all(reader.resolve_ids(query)))
    tasks = [t for t in tasks if args.status is None or t.status == args.status]
    if args.json_output:
        output.records(task.record() for task in tasks)
        return 0
    if not tasks:
        filtered = any(v is not None for v in (args.function, args.status, args.request))
        output.line("No background tasks" + (" match these filters." if filtered else " recorded yet."))
        return 0
    print_table(
        output,
        ("task", "function", "name", "request", "started", "duration", "status", "reason / error"),
        [_row(task) for task in tasks],
    )
    return 0


def _row(task: TaskSummary) -> list[Cell]:
    return [
        task.task,
        task.function or "",
        task.name or "",
        short_id(task.request),
        _clock(task.started),
        _duration(task),
        (task.status, _STATUS_TONE.get(task.status, "")),
        (task.reason or error_line(task.error or ""), "warn" if task.reason else "bad"),
    ]


def _duration(task: TaskSummary) -> str:
    if task.status != "running":
        return fmt_duration(task.duration_ms)
    if task.started is None:
        return ""
    return f"{fmt_duration((time.time() - task.started) * 1000)} so far"


def _clock(ts: float | None) -> str:
    if ts is None:
        return ""
    fmt = "%H:%M:%S" if time.localtime(ts)[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))


def show(workdir: Path | None, task_id: str, json_output: bool, output: Output) -> int:
    """One task: its details, then its timeline (the request that spawned it, its log lines, its end)."""
    with EventReader(store_path(workdir)) as reader:
        task = _resolve(reader, task_id)
        timeline = reader.all(EventQuery(task=task, exact_ids=True))
        summary = summarize(event for _, event in timeline)[0]
        if summary.request:
            spawned_by = EventQuery(request=summary.request, kinds=("request",), exact_ids=True)
            timeline = sorted([*timeline, *reader.all(spawned_by)], key=lambda stored: stored[0])
    if json_output:
        record = {**summary.record(), "events": [event.to_record() for _, event in timeline]}
        output.record(record)
        return 0
    _print_details(output, summary)
    output.line()
    printer = EventPrinter(output, json_output=False, with_date=True, functions=[summary.function or ""])
    for _, event in timeline:
        printer.emit(event)
    return 0


def _resolve(reader: EventReader, task_id: str) -> str:
    """The full id of the one task `task_id` names (exactly, or by a unique prefix)."""
    found: list[StoredEvent] = reader.all(EventQuery(task=task_id, kinds=TASK_KINDS))
    ids = sorted({event.task for _, event in found if event.task})
    if task_id in ids:
        return task_id
    if not ids:
        raise EdgecliError(
            f"No task {task_id!r} in the event store. `edgecli tasks` lists the recorded ones (old events "
            "are dropped past the store's retention)."
        )
    if len(ids) > 1:
        shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
        raise UsageError(f"{task_id!r} matches {len(ids)} tasks ({shown}); give more of the id.")
    return ids[0]


def _print_details(output: Output, task: TaskSummary) -> None:
    pairs: list[tuple[str, Cell]] = [
        ("task", task.task),
        ("function", task.function or ""),
        ("name", task.name or ""),
        ("request", task.request or ""),
        ("worker", task.worker or ""),
        ("started", _clock(task.started)),
        ("duration", _duration(task)),
        ("status", (task.status, _STATUS_TONE.get(task.status, ""))),
    ]
    if task.reason:
        pairs.append(("reason", (task.reason, "warn")))
    if task.error:
        pairs.append(("error", (error_line(task.error), "bad")))
    print_fields(output, pairs)
