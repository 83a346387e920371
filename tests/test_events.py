"""Event records: the wire row, the `--json` record, and one constructor per kind."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime

import pytest

from edgecli import events
from edgecli.events import BASE_FIELDS, KIND_FIELDS, KINDS, OPTIONAL_FIELDS, Event, iso_ts, parse_ts

pytestmark = pytest.mark.timeout(10)


def test_the_wire_row_round_trips_every_field_and_keeps_the_bytes_it_came_as() -> None:
    event = Event(
        "task_end",
        "task notify failed",
        "error",
        function="hello",
        worker="w1",
        request="r1",
        task="w1.t-1",
        ts=1_700_000_000.25,
        fields={"name": "notify", "status": "failed", "duration_ms": 12.5, "error": "Tb", "reason": None},
    )
    payload = event.to_row_json()
    row = json.loads(payload)
    assert row[:8] == [
        1_700_000_000.25,
        "task_end",
        "hello",
        "w1",
        "r1",
        "w1.t-1",
        "error",
        "task notify failed",
    ]
    assert row[8] == dict(event.fields)  # nested, not a JSON string
    assert payload.isascii() and b"\n" not in Event("log", "two\nlines é").to_row_json()
    arrived = Event.from_row_json(payload)
    assert arrived == event and arrived.to_row_json() is payload  # forwarded as it came
    assert Event.from_row_json(Event("log", "hi").to_row_json()).fields == {}


@pytest.mark.parametrize("payload", [b"[1, 2]", b'{"kind": "log"}', b"not json", b"[" + b"1," * 8 + b"1"])
def test_what_is_not_a_wire_row_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Event.from_row_json(payload)


def test_what_json_cannot_hold_travels_as_text() -> None:
    event = Event("log", "hi", fields={"when": datetime(2024, 1, 1, tzinfo=UTC)})
    assert Event.from_row_json(event.to_row_json()).fields == {"when": "2024-01-01 00:00:00+00:00"}


def test_the_record_is_flat_with_an_iso_timestamp() -> None:
    event = Event("request", "GET / 200", ts=1_700_000_000.25, fields={"status": 200})
    record = event.to_record()
    assert list(record) == [*BASE_FIELDS, "status"]
    assert record["ts"] == "2023-11-14T22:13:20.250Z" and record["status"] == 200
    assert parse_ts(iso_ts(1_700_000_000.5)) == 1_700_000_000.5


def test_every_kind_has_a_constructor_giving_exactly_its_fields() -> None:
    made = {
        "boot": events.boot(41.7, function="f", worker="w"),
        "boot_error": events.boot_error("Traceback...", function="f"),
        "request": events.request("GET", "/", 503, 2.5, function="f", request="r"),
        "log": events.log("hi", "warning", task="t"),
        "task_start": events.task_start("job", task="t"),
        "task_end": events.task_end("job", "cancelled", 3.0, reason="termination", task="t"),
        "beforeunload": events.beforeunload("wall_clock"),
        "shutdown": events.shutdown("memory", 5.0, 300.0, "error"),
        "reload": events.reload(["a.py", "b.py"]),
    }
    assert tuple(made) == KINDS
    for kind, event in made.items():
        always = tuple(f for f in KIND_FIELDS[kind] if f not in OPTIONAL_FIELDS)
        assert event.kind == kind and tuple(event.fields) == always, kind
        assert event.message, kind
        assert callable(getattr(events, kind))
    assert made["request"].level == "error" and made["task_end"].level == "warning"
    assert made["task_end"].message == "task job cancelled (termination)"
    assert (made["log"].level, made["log"].task, made["boot"].worker) == ("warning", "t", "w")
    assert events.boot(1.0, ts=5.0).ts == 5.0


def test_an_optional_field_is_in_the_event_only_when_set() -> None:
    assert events.log("raw", "error", stream="fd").fields == {"stream": "fd"}
    assert events.log("cut", "warning", cut_by="shutdown", request="r").fields == {"cut_by": "shutdown"}
    assert set(OPTIONAL_FIELDS) <= {f for fields in KIND_FIELDS.values() for f in fields}
    handled = events.task_end("job", "failed", 1.0, error="ValueError: x", level="warning")
    assert handled.level == "warning" and events.task_end("job", "failed", 1.0).level == "error"
    assert events.boot_error("Traceback...", "cannot import").message == "cannot import"


def test_constructors_take_only_their_kinds_fields_and_where_it_happened() -> None:
    context = {"function", "worker", "request", "task", "ts"}
    for kind in KINDS:
        params = set(inspect.signature(getattr(events, kind)).parameters) - {"context"}
        assert set(KIND_FIELDS[kind]) <= params, kind
        assert params - set(KIND_FIELDS[kind]) <= {"message", "level"}, kind
        assert not context & params, kind
