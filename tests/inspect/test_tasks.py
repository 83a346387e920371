"""`edgecli tasks` and `edgecli tasks show` through the real CLI, from events written to the store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from inspect_helpers import CliRunner, EventWriter, log, store_of
from serving import wait_until

from edgecli.events import Event

pytestmark = pytest.mark.timeout(90)  # each test runs the CLI, a fresh Python, several times

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "index.py", line 9, in resize\n'
    '    raise ValueError("bad image")\n'
    "ValueError: bad image"
)
T0 = time.time() - 120


def _start(task: str, name: str, request: str | None, function: str = "hello", at: float = 0) -> Event:
    return Event(
        "task_start",
        f"task {name} started",
        function=function,
        worker="w1",
        request=request,
        task=task,
        ts=T0 + at,
        fields={"name": name},
    )


def _end(task: str, name: str, request: str | None, status: str, at: float, **extra: object) -> Event:
    fields = {"name": name, "status": status, "duration_ms": 1500.0, "error": None, "reason": None, **extra}
    level = {"failed": "error", "cancelled": "warning"}.get(status, "info")
    return Event(
        "task_end",
        f"task {name} {status}",
        level,
        function="hello",
        worker="w1",
        request=request,
        task=task,
        ts=T0 + at,
        fields=fields,
    )


@pytest.fixture
def four_tasks(write_events: EventWriter) -> None:
    write_events(
        [
            _start("w1.t-1", "notify", "req-one"),
            _start("w1.t-2", "resize", "req-one"),
            Event(
                "request",
                function="hello",
                worker="w1",
                request="req-one",
                ts=T0 + 0.1,
                fields={"method": "POST", "path": "/hello", "status": 200, "duration_ms": 3.0},
            ),
            log("sending mail", function="hello", worker="w1", request="req-one", task="w1.t-1"),
            _end("w1.t-1", "notify", "req-one", "completed", 1.5),
            log(TRACEBACK, level="error", function="hello", worker="w1", request="req-one", task="w1.t-2"),
            _end("w1.t-2", "resize", "req-one", "failed", 1.6, error=TRACEBACK),
            _start("w1.t-3", "cleanup", "req-two", at=2),
            _end("w1.t-3", "cleanup", "req-two", "cancelled", 2.5, reason="termination"),
            _start("w2.t-1", "sync", "req-three", function="jobs", at=3),
        ]
    )


def _json(cli: CliRunner, *args: str) -> list[dict[str, object]]:
    result = cli("tasks", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.usefixtures("four_tasks")
def test_table_lists_every_task_with_status_duration_and_reason(cli: CliRunner) -> None:
    result = cli("tasks")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:7] == ["task", "function", "name", "request", "started", "duration", "status"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    assert set(rows) == {"w1.t-1", "w1.t-2", "w1.t-3", "w2.t-1"}
    assert "notify" in rows["w1.t-1"] and "1.50 s" in rows["w1.t-1"] and "completed" in rows["w1.t-1"]
    assert "failed" in rows["w1.t-2"] and "ValueError: bad image" in rows["w1.t-2"]
    assert "cancelled" in rows["w1.t-3"] and "termination" in rows["w1.t-3"]
    assert "running" in rows["w2.t-1"] and "so far" in rows["w2.t-1"]


@pytest.mark.usefixtures("four_tasks")
def test_json_objects_have_the_documented_fields(cli: CliRunner) -> None:
    tasks = {t["task"]: t for t in _json(cli)}
    for key in ("task", "function", "name", "request", "status", "started", "duration_ms", "error", "reason"):
        assert all(key in t for t in tasks.values())
    assert tasks["w1.t-2"]["error"] == TRACEBACK and tasks["w1.t-2"]["duration_ms"] == 1500.0
    assert tasks["w1.t-3"]["reason"] == "termination"
    assert tasks["w2.t-1"]["status"] == "running" and tasks["w2.t-1"]["duration_ms"] is None
    assert str(tasks["w1.t-1"]["started"]).endswith("Z")


@pytest.mark.usefixtures("four_tasks")
def test_filters_by_function_status_and_request(cli: CliRunner) -> None:
    assert [t["task"] for t in _json(cli, "--function", "jobs")] == ["w2.t-1"]
    assert [t["task"] for t in _json(cli, "--status", "failed")] == ["w1.t-2"]
    assert [t["task"] for t in _json(cli, "--status", "running")] == ["w2.t-1"]
    assert [t["task"] for t in _json(cli, "--request", "req-one")] == ["w1.t-1", "w1.t-2"]
    assert [t["task"] for t in _json(cli, "--request", "req-one", "--status", "completed")] == ["w1.t-1"]
    bad = cli("tasks", "--status", "done")
    assert bad.returncode == 2 and "running, completed, failed, cancelled" in bad.stderr


def test_no_tasks_and_no_store(cli: CliRunner, write_events: EventWriter) -> None:
    missing = cli("tasks")
    assert missing.returncode == 1 and "No events recorded yet" in missing.stderr
    write_events([log("just a log")])
    empty = cli("tasks")
    assert empty.returncode == 0 and "No background tasks recorded yet." in empty.stdout


@pytest.mark.usefixtures("four_tasks")
def test_show_prints_details_timeline_logs_and_the_traceback_once(cli: CliRunner) -> None:
    result = cli("tasks", "show", "w1.t-2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "status: failed" in out and "name: resize" in out and "request: req-one" in out
    assert "error: ValueError: bad image" in out
    assert "POST /hello → 200" in out  # the request that registered it
    assert "task resize started" in out and "task resize failed after 1.50 s" in out
    assert out.count('raise ValueError("bad image")') == 1
    assert "sending mail" not in out  # another task's log line


@pytest.mark.usefixtures("four_tasks")
def test_show_json_and_prefixes(cli: CliRunner) -> None:
    result = cli("tasks", "show", "w1.t-1", "--json")
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    assert [e["kind"] for e in record["events"]] == ["task_start", "request", "log", "task_end"]
    assert cli("tasks", "show", "w2").returncode == 0  # a unique prefix is enough
    ambiguous = cli("tasks", "show", "w1.t")
    assert ambiguous.returncode == 2 and "matches 3 tasks" in ambiguous.stderr
    missing = cli("tasks", "show", "nope")
    assert missing.returncode == 1 and "No task 'nope'" in missing.stderr


_KILLED_SERVE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edgecli.events import Event
    from edgecli.store.writer import StoreWriter

    writer = StoreWriter(Path(sys.argv[1]), 100_000, 1 << 30)
    started = Event("task_start", function="hello", request="r1", task="w1.t-1", fields={"name": "job"})
    working = Event("log", "working", function="hello", request="r1", task="w1.t-1")
    writer.write(started.to_row_json() + b"\\n" + working.to_row_json() + b"\\n")
    print("ready", flush=True)
    i = 0
    while True:  # still writing when it is killed
        writer.write(Event("log", f"tick {i}", function="hello").to_row_json() + b"\\n")
        i += 1
        time.sleep(0.0005)
    """
)


def test_readers_work_after_the_writer_was_killed(cli: CliRunner, project: Path) -> None:
    path = store_of(project)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SERVE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # Kill it while it is still writing: once ticks past the flushed events are committed.
        wait_until(lambda: "tick 50" in cli("logs", "-n", "100000").stdout, what="later ticks in the store")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    tasks = _json(cli)
    assert [(t["task"], t["status"]) for t in tasks] == [("w1.t-1", "running")]
    logs = cli("logs", "--task", "w1.t-1")
    assert logs.returncode == 0 and "working" in logs.stdout
    assert "tick 0" in cli("logs", "-n", "100000").stdout


def test_a_json_record_holds_every_field_of_the_summary() -> None:
    from dataclasses import fields

    from edgecli.inspect.tasks import TaskSummary

    record = TaskSummary("w.t-1", started=T0, ended=T0 + 1).record()
    assert list(record) == [f.name for f in fields(TaskSummary)]
    assert str(record["started"]).endswith("Z") and str(record["ended"]).endswith("Z")
