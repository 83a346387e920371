"""Event records: what the runtime reports (DESIGN §7 "Event records"), as small frozen dataclasses.

Both sides speak these: a worker sends `Event.to_record()` dicts over the wire, the host turns them back
with `Event.from_record()` and hands them to its sinks (the terminal printer, the SQLite store).
Rendering lives in console.py; persistence in the store below.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Level = Literal["debug", "info", "warning", "error"]
LEVELS: tuple[Level, ...] = ("debug", "info", "warning", "error")
KINDS = (
    "boot",  # boot_ms
    "boot_error",  # error
    "request",  # method, path, status, duration_ms
    "log",
    "task_start",  # name
    "task_end",  # name, status, duration_ms, error, reason
    "beforeunload",  # reason
    "shutdown",  # reason, cpu_ms, memory_mb
    "reload",  # changes
)
BASE_FIELDS = ("ts", "kind", "function", "worker", "request", "task", "level", "message")


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

    def to_record(self) -> dict[str, Any]:
        """The flat JSON record of DESIGN §7 (`ts` as ISO 8601 UTC)."""
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

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        ts = record.get("ts")
        extra = {k: v for k, v in record.items() if k not in BASE_FIELDS}
        return cls(
            kind=str(record["kind"]),
            message=str(record.get("message") or ""),
            level=str(record.get("level") or "info"),
            function=record.get("function"),
            worker=record.get("worker"),
            request=record.get("request"),
            task=record.get("task"),
            ts=parse_ts(ts) if isinstance(ts, str) else float(ts) if ts is not None else time.time(),
            fields=extra,
        )


class EventSink(Protocol):
    """Anything that takes events: the terminal printer, the store writer, a test's list."""

    def emit(self, event: Event) -> None: ...


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
