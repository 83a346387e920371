"""EventLog: serve's records as the plugin reads them, fed by hand (no processes)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from edgecli.events import iso_ts
from edgecli.testing.records import EventLog, TaskResult

pytestmark = pytest.mark.timeout(10)


def line(kind: str, request: str | None = None, task: str | None = None, **fields: Any) -> str:
    record = {
        "ts": fields.pop("ts", iso_ts(time.time())),
        "kind": kind,
        "function": fields.pop("function", "fn"),
        "worker": "w1",
        "request": request,
        "task": task,
        "level": fields.pop("level", "info"),
        "message": fields.pop("message", kind),
        **fields,
    }
    return json.dumps(record) + "\n"


def feed(log: EventLog, *lines: str) -> None:
    for text in lines:
        log.feed(text)


def test_tasks_of_a_request_in_start_order_with_their_outcome() -> None:
    log = EventLog()
    feed(
        log,
        line("task_start", "r1", "w1.t-1", name="first"),
        line("task_start", "r1", "w1.t-2", name="second"),
        line("request", "r1"),
        line("task_end", "r1", "w1.t-2", name="second", status="failed", duration_ms=3.0, error="Traceback"),
    )
    assert not log.settled("r1")()
    assert [t.status for t in log.tasks("r1")] == ["running", "failed"]
    feed(log, line("task_end", "r1", "w1.t-1", name="first", status="cancelled", reason="termination"))
    assert log.settled("r1")()
    assert log.tasks("r1") == [
        TaskResult("first", "cancelled", None, None, "termination", "w1.t-1"),
        TaskResult("second", "failed", 3.0, "Traceback", None, "w1.t-2"),
    ]


def test_a_task_record_without_a_request_belongs_to_its_tasks_request() -> None:
    log = EventLog()
    feed(log, line("task_start", "r1", "w1.t-1", name="job"), line("log", None, "w1.t-1", message="step"))
    assert [r["message"] for r in log.of_request("r1")] == ["task_start", "step"]


def test_a_new_scope_forgets_earlier_requests_and_drops_their_late_records() -> None:
    log = EventLog()
    feed(log, line("task_start", "old", "w1.t-1", name="job"), line("request", "old"), line("boot"))
    log.begin_scope()
    feed(
        log,
        line("log", "old", "w1.t-1", message="late line of an earlier test"),
        line("task_end", None, "w1.t-1", name="job", status="completed"),
        line("request", "new"),
        line("shutdown", message="a worker left"),
    )
    assert [r["message"] for r in log.select()] == ["request", "a worker left"]
    assert log.tasks() == [] and log.of_request("old") == []


def test_running_at_a_moment_leaves_out_tasks_cut_off_by_the_platform() -> None:
    log = EventLog()
    before, after = time.time() - 10, time.time() + 10
    feed(
        log,
        line("task_start", "r", "t1", name="done_in_time"),
        line("task_end", "r", "t1", name="done_in_time", status="completed", ts=iso_ts(before)),
        line("task_start", "r", "t2", name="finished_late"),
        line("task_end", "r", "t2", name="finished_late", status="completed", ts=iso_ts(after)),
        line("task_start", "r", "t3", name="cut_off"),
        line("task_end", "r", "t3", status="cancelled", reason="termination", ts=iso_ts(after)),
        line("task_start", "r", "t4", name="still_running"),
    )
    assert [t.name for t in log.running_at(time.time())] == ["finished_late", "still_running"]


def test_select_filters_like_edgecli_logs() -> None:
    log = EventLog()
    feed(
        log,
        line("log", "r1", level="debug", message="a"),
        line("log", "r1", level="warning", message="b"),
        line("request", "r2", function="other", level="error", message="c"),
    )
    assert [r["message"] for r in log.select(level="warning")] == ["b", "c"]
    assert [r["message"] for r in log.select(function="fn", kind="log")] == ["a", "b"]
    assert [r["message"] for r in log.select(request="r2")] == ["c"]
    with pytest.raises(TypeError, match="unknown filters"):
        log.select(status=200)
    with pytest.raises(ValueError, match="one of debug, info, warning, error"):
        log.select(level="loud")


def test_lines_that_are_not_records_are_kept_as_output() -> None:
    log = EventLog()
    feed(log, "edgecli serving demo\n", "{not json\n", '{"no": "kind"}\n')
    assert list(log.output) == ["edgecli serving demo", "{not json", '{"no": "kind"}']
    assert log.select() == []


@pytest.mark.timeout(60)
def test_wait_returns_when_the_record_arrives_or_the_output_ends() -> None:
    log = EventLog()
    threading.Timer(0.05, log.feed, [line("request", "r1")]).start()
    assert log.wait(log.answered(["r1"]), timeout=5)
    threading.Timer(0.05, log.close).start()
    started = time.monotonic()
    assert not log.wait(log.answered(["r2"]), timeout=30)
    assert time.monotonic() - started < 20  # the end of the output ended the wait, not its timeout
    assert not log.wait(log.answered(["r2"]), timeout=0.01)
