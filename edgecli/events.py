"""Event records: what the runtime reports, as small frozen dataclasses (docs/architecture.md, "Event
records").

Both sides speak these: a worker sends each event over the wire as its row in JSON
(`Event.to_row_json()`: the store's column order, extra fields as a nested object), the host turns it
back with `Event.from_row_json()` and hands it to its sinks (the terminal printer, the SQLite store),
and the store writes those same bytes.
`to_record()` is the flat JSON record that `--json` prints. Rendering lives in console.py,
persistence in edgecli/store.py. Light on purpose: workers import this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from edgecli.compact_json import decode_json, encode_json

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
_new = object.__new__
_set = object.__setattr__  # what a frozen dataclass's own __init__ calls
BASE_FIELDS = ("ts", "kind", "function", "worker", "request", "task", "level", "message")
Row = tuple[Any, ...]


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
    # The event's row as JSON when it arrived so (a worker's events do): the store writes these bytes
    # as they are, with no encoding on serve's loop.
    row_json: bytes | None = field(default=None, compare=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """The flat JSON record (docs/architecture.md, "Event records") (`ts` as ISO 8601 UTC)."""
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

    def to_row(self) -> Row:
        """The store's row: BASE_FIELDS order, `ts` a float, then the extra fields as JSON text (None when
        there are none)."""
        return self._row(encode_json(self.fields) if self.fields else None)

    def to_row_json(self) -> bytes:
        """The row as compact ASCII JSON: what a worker sends, and what the store writes. The extra
        fields are a nested object here, not JSON text in a string: one encoding pass, no escaping."""
        if self.row_json is not None:
            return self.row_json
        return encode_json(self._row(self.fields or None)).encode()

    def _row(self, extra: Any) -> Row:
        return (
            self.ts,
            self.kind,
            self.function,
            self.worker,
            self.request,
            self.task,
            self.level,
            self.message,
            extra,
        )

    @classmethod
    def from_row_json(cls, payload: bytes) -> Event:
        return cls.from_row(decode_json(payload.decode()), payload)

    @classmethod
    def from_row(cls, row: Sequence[Any], row_json: bytes | None = None) -> Event:
        ts, kind, function, worker, request, task, level, message, extra = row
        fields = extra if isinstance(extra, dict) else json.loads(extra) if extra else {}
        # Every event a worker sends is rebuilt here, on serve's loop: setting the slots directly costs
        # half of what the frozen dataclass's __init__ does (~1.2 against ~2.6 µs). It sets every field
        # (a test checks); nothing here needs __init__'s defaults.
        event = _new(cls)
        _set(event, "kind", kind)
        _set(event, "message", message)
        _set(event, "level", level)
        _set(event, "function", function)
        _set(event, "worker", worker)
        _set(event, "request", request)
        _set(event, "task", task)
        _set(event, "ts", ts)
        _set(event, "fields", fields)
        _set(event, "row_json", row_json)
        return event

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
