"""Event records: what the runtime reports, as a small frozen dataclass and one constructor per kind.

The kinds and their fields are `KIND_FIELDS`: the constructors below build them, the renderer, `tasks`
and `invoke --wait` read them, and docs/architecture.md describes them. Both sides speak the wire form:
a worker sends each event as its row in JSON (`Event.to_row_json()`: the store's column order, the
kind's fields as a nested object); the host turns it back with `Event.from_row_json()` and hands it to
its sinks (the terminal printer, the event store), and the store feed forwards those same bytes.
`to_record()` is the flat JSON record `--json` prints. Light on purpose: workers import this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypedDict, Unpack

Level = Literal["debug", "info", "warning", "error"]
LEVELS: tuple[Level, ...] = ("debug", "info", "warning", "error")
# Every kind, with the fields it adds to the base ones (BASE_FIELDS). A field in OPTIONAL_FIELDS is in
# an event only when it is set: most log lines have none of them.
KIND_FIELDS: Mapping[str, tuple[str, ...]] = {
    "boot": ("boot_ms",),
    "boot_error": ("error",),
    "request": ("method", "path", "status", "duration_ms"),
    "log": ("stream", "logger", "cut_by"),
    "task_start": ("name",),
    "task_end": ("name", "status", "duration_ms", "error", "reason"),
    "beforeunload": ("reason",),
    "shutdown": ("reason", "cpu_ms", "memory_mb"),
    "reload": ("changes",),
}
KINDS: tuple[str, ...] = tuple(KIND_FIELDS)
# A log's source when it is not print(): "fd" (raw writes to fd 1/2), a `logging` logger's name; and
# "shutdown" when serve's shutdown deadline cut the request the line is about.
OPTIONAL_FIELDS = frozenset({"stream", "logger", "cut_by"})
TASK_KINDS = ("task_start", "task_end")
TASK_STATUSES = ("completed", "failed", "cancelled")  # a task_end's status
BASE_FIELDS = ("ts", "kind", "function", "worker", "request", "task", "level", "message")
ROW_LENGTH = len(BASE_FIELDS) + 1  # the wire row: the base fields, then the kind's as an object
# One encoder for every row: `json.dumps` with options builds a new encoder per call, on every event.
_encode_row = json.JSONEncoder(separators=(",", ":"), default=str).encode


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    message: str = ""
    level: str = "info"
    function: str | None = None
    worker: str | None = None
    request: str | None = None
    task: str | None = None
    ts: float = field(default_factory=time.time)
    fields: Mapping[str, Any] = field(default_factory=dict)  # the kind's extra fields
    # The event's row as JSON when it arrived so (a worker's events do): the store feed forwards these
    # bytes as they are, rather than encode the event again on serve's loop.
    row_json: bytes | None = field(default=None, compare=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """The flat JSON record of `logs --json` (`ts` as ISO 8601 UTC)."""
        record: dict[str, Any] = {
            "ts": iso_ts(self.ts),
            "kind": self.kind,
            "function": self.function,
            "worker": self.worker,
            "request": self.request,
            "task": self.task,
            "level": self.level,
            "message": self.message,
        }
        record.update(self.fields)
        return record

    def to_row_json(self) -> bytes:
        """The wire row as compact ASCII JSON (so it never holds a raw newline): what a worker sends
        and what the store's process reads, one per line."""
        if self.row_json is not None:
            return self.row_json
        row = [
            self.ts,
            self.kind,
            self.function,
            self.worker,
            self.request,
            self.task,
            self.level,
            self.message,
            dict(self.fields) or None,
        ]
        return _encode_row(row).encode()

    @classmethod
    def from_row_json(cls, payload: bytes) -> Event:
        """The event a wire row holds; ValueError when `payload` is not one."""
        row = json.loads(payload)
        if not isinstance(row, list) or len(row) != ROW_LENGTH:
            raise ValueError(f"an event row is a JSON array of {ROW_LENGTH} values")
        ts, kind, function, worker, request, task, level, message, extra = row
        return cls(
            kind=kind,
            message=message,
            level=level,
            function=function,
            worker=worker,
            request=request,
            task=task,
            ts=ts,
            fields=extra if isinstance(extra, dict) else {},
            row_json=payload,
        )


class Context(TypedDict, total=False):
    """Who an event is about and when, for the constructors below (each defaults to None / now)."""

    function: str | None
    worker: str | None
    request: str | None
    task: str | None
    ts: float


def _event(kind: str, message: str, level: str, context: Context, fields: dict[str, Any]) -> Event:
    return Event(kind=kind, message=message, level=level, fields=fields, **context)


# One constructor per kind, its fields typed: the only place an event is made (a worker's reporter and
# serve's supervisor, pools and reloader all call these). `message` and `level` default to what the
# kind usually says; a caller with more to say (a duration, a cause) passes its own.


def log(
    message: str,
    level: Level = "info",
    *,
    stream: str | None = None,
    logger: str | None = None,
    cut_by: str | None = None,
    **context: Unpack[Context],
) -> Event:
    fields: dict[str, Any] = {}
    if stream is not None:
        fields["stream"] = stream
    if logger is not None:
        fields["logger"] = logger
    if cut_by is not None:
        fields["cut_by"] = cut_by
    return _event("log", message, level, context, fields)


def boot(boot_ms: float, message: str | None = None, **context: Unpack[Context]) -> Event:
    return _event("boot", message or f"booted in {boot_ms} ms", "info", context, {"boot_ms": boot_ms})


def boot_error(error: str, message: str | None = None, **context: Unpack[Context]) -> Event:
    """`error` in full (a traceback, an installer's output); `message` its one-line account, if shorter."""
    return _event("boot_error", message or error, "error", context, {"error": error})


def request(
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    message: str | None = None,
    **context: Unpack[Context],
) -> Event:
    level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
    return _event("request", message or f"{method} {path} {status} {duration_ms} ms", level, context, fields)


def task_start(name: str, **context: Unpack[Context]) -> Event:
    return _event("task_start", f"task {name} started", "info", context, {"name": name})


def task_end(
    name: str,
    status: str,
    duration_ms: float,
    error: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    level: Level | None = None,
    **context: Unpack[Context],
) -> Event:
    """`level` follows `status` unless given (a failure an `unhandledrejection` listener handled warns)."""
    if level is None:
        level = "error" if status == "failed" else "warning" if status == "cancelled" else "info"
    default = f"task {name} {status}" + (f" ({reason})" if reason else "")
    fields = {"name": name, "status": status, "duration_ms": duration_ms, "error": error, "reason": reason}
    return _event("task_end", message or default, level, context, fields)


def beforeunload(reason: str, **context: Unpack[Context]) -> Event:
    return _event("beforeunload", f"beforeunload ({reason})", "info", context, {"reason": reason})


def shutdown(
    reason: str,
    cpu_ms: float | None,
    memory_mb: float | None,
    level: Level = "info",
    message: str | None = None,
    **context: Unpack[Context],
) -> Event:
    fields = {"reason": reason, "cpu_ms": cpu_ms, "memory_mb": memory_mb}
    return _event("shutdown", message or f"worker stopped ({reason})", level, context, fields)


def reload(
    changes: list[str], message: str | None = None, level: Level = "info", **context: Unpack[Context]
) -> Event:
    default = f"reload: {', '.join(changes)}"
    return _event("reload", message or default, level, context, {"changes": changes})


class EventSink(Protocol):
    """Anything that takes events: the terminal printer, the store feed, a test's list."""

    def emit(self, event: Event) -> None: ...


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
