"""`edgecli logs` through the real CLI: every filter, -n, --since forms, --json, follow mode, no store."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest
from inspect_helpers import CliRunner, EventWriter, log, running_cli, store_of
from serving import rows, wait_until

from edgecli.events import BASE_FIELDS, Event
from edgecli.store.writer import StoreWriter

pytestmark = pytest.mark.timeout(90)  # each test runs the CLI, a fresh Python, several times


def _messages(stdout: str) -> list[str]:
    """The message column of plain event lines (everything after the level)."""
    out = []
    for line in stdout.splitlines():
        for level in ("DEBUG ", "INFO  ", "WARN  ", "ERROR "):
            if f" {level}" in line:
                out.append(line.split(f" {level}", 1)[1])
                break
    return out


def test_no_store_yet_says_so_plainly(cli: CliRunner) -> None:
    result = cli("logs")
    assert result.returncode == 1
    assert "No events recorded yet" in result.stderr and "edgecli serve" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_outside_a_project_is_a_clear_error(cli: CliRunner, tmp_path: Path) -> None:
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    result = cli("logs", cwd=elsewhere)
    assert result.returncode == 1
    assert "supabase/config.toml" in result.stderr and "Traceback" not in result.stderr


def test_newest_hundred_by_default_oldest_first_and_n(cli: CliRunner, write_events: EventWriter) -> None:
    write_events(log(f"line {i}", function="hello") for i in range(150))
    result = cli("logs")
    assert result.returncode == 0, result.stderr
    assert _messages(result.stdout) == [f"line {i}" for i in range(50, 150)]
    assert _messages(cli("logs", "-n", "3").stdout) == ["line 147", "line 148", "line 149"]
    assert cli("logs", "-n", "-1").returncode == 2


def test_function_request_and_task_filters_combine(cli: CliRunner, write_events: EventWriter) -> None:
    write_events(
        [
            log("a", function="hello", request="req-aaaa-1111"),
            log("b", function="hello", request="req-bbbb-2222", task="w1.t-1"),
            log("c", function="other", request="req-bbbb-2222"),
            log("d", function="hello", request="req-bbbb-2222", task="w1.t-2"),
            log("e", function="hello"),
        ]
    )
    assert _messages(cli("logs", "--function", "hello").stdout) == ["a", "b", "d", "e"]
    assert _messages(cli("logs", "--request", "req-bbbb-2222").stdout) == ["b", "c", "d"]
    # Ids print shortened; the shown prefix is enough to filter.
    assert _messages(cli("logs", "--request", "req-bbbb").stdout) == ["b", "c", "d"]
    assert _messages(cli("logs", "--task", "w1.t-2").stdout) == ["d"]
    assert _messages(cli("logs", "--function", "hello", "--request", "req-bbbb-2222").stdout) == ["b", "d"]
    assert _messages(cli("logs", "--function", "nope").stdout) == []


def test_a_full_id_matches_exactly_and_a_shortened_one_as_a_prefix(
    cli: CliRunner, write_events: EventWriter
) -> None:
    write_events(
        [
            log("one", task="w1.t-1", request="req-1"),
            log("ten", task="w1.t-10", request="req-10"),
            log("eleven", task="w1.t-11", request="req-10"),
        ]
    )
    assert _messages(cli("logs", "--task", "w1.t-1").stdout) == ["one"]
    assert _messages(cli("logs", "--request", "req-1").stdout) == ["one"]
    assert _messages(cli("logs", "--task", "w1.t").stdout) == ["one", "ten", "eleven"]
    assert _messages(cli("logs", "--task", "w1.t-1", "--request", "req-1").stdout) == ["one"]


def test_level_shows_that_level_and_more_severe(cli: CliRunner, write_events: EventWriter) -> None:
    write_events(log(level, level=level, function="hello") for level in ("debug", "info", "warning", "error"))
    assert _messages(cli("logs", "--level", "warning").stdout) == ["warning", "error"]
    assert _messages(cli("logs", "--level", "info").stdout) == ["info", "warning", "error"]
    assert _messages(cli("logs", "--level", "ERROR").stdout) == ["error"]
    bad = cli("logs", "--level", "loud")
    assert bad.returncode == 2 and "debug, info, warning, error" in bad.stderr


def test_since_durations_and_iso_times(cli: CliRunner, write_events: EventWriter) -> None:
    write_events(
        [log("two days ago", ago=2 * 86400), log("an hour ago", ago=3600), log("a minute ago", ago=60)]
    )
    assert _messages(cli("logs", "--since", "10m").stdout) == ["a minute ago"]
    assert _messages(cli("logs", "--since", "2h").stdout) == ["an hour ago", "a minute ago"]
    assert len(_messages(cli("logs", "--since", "3d").stdout)) == 3
    assert _messages(cli("logs", "--since", "90s").stdout) == ["a minute ago"]
    local = datetime.fromtimestamp(time.time() - 7200).isoformat(timespec="seconds")  # naive = local time
    assert _messages(cli("logs", "--since", local).stdout) == ["an hour ago", "a minute ago"]
    utc = datetime.fromtimestamp(time.time() - 600).astimezone().isoformat()
    assert _messages(cli("logs", "--since", utc).stdout) == ["a minute ago"]
    bad = cli("logs", "--since", "yesterday")
    assert bad.returncode == 2 and "10m" in bad.stderr and "Traceback" not in bad.stderr


def test_json_records_have_the_documented_fields(cli: CliRunner, write_events: EventWriter) -> None:
    write_events(
        [
            log("hi", function="hello", worker="w1", request="r1"),
            Event(
                "request",
                function="hello",
                worker="w1",
                request="r1",
                fields={"method": "POST", "path": "/hello", "status": 201, "duration_ms": 4.5},
            ),
        ]
    )
    result = cli("logs", "--json")
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert list(first) == list(BASE_FIELDS)
    assert first["message"] == "hi" and first["task"] is None and first["ts"].endswith("Z")
    assert second["kind"] == "request" and second["status"] == 201 and second["duration_ms"] == 4.5


@pytest.mark.timeout(90)
def test_follow_prints_new_events_and_exits_zero_on_ctrl_c(project: Path, write_events: EventWriter) -> None:
    write_events([log("old line", function="hello")])
    with running_cli(project, "logs", "-f", "--function", "hello") as proc:
        assert proc.stdout is not None
        assert "old line" in proc.stdout.readline()
        writer = StoreWriter(store_of(project), 1000, 1 << 30)  # serve keeps writing while we follow
        writer.write(rows(log("ignored: other function", function="other")))
        writer.write(rows(log("fresh line", function="hello")))
        assert "fresh line" in proc.stdout.readline()
        writer.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == ""
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


@pytest.mark.timeout(90)
def test_follow_waits_for_a_store_that_does_not_exist_yet(project: Path) -> None:
    with running_cli(project, "logs", "-f") as proc:
        assert proc.stderr is not None and "waiting for `edgecli serve`" in proc.stderr.readline()
        writer = StoreWriter(store_of(project), 1000, 1 << 30)
        writer.write(rows(log("first ever", function="hello")))
        writer.close()
        assert proc.stdout is not None and "first ever" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_a_function_without_events_is_named(cli: CliRunner, write_events: EventWriter) -> None:
    write_events([log("hi", function="hello")])
    result = cli("logs", "--function", "nope")
    assert result.returncode == 0 and result.stdout == ""
    assert "no function named 'nope' has events" in result.stderr
    quiet = cli("logs", "--function", "hello", "--level", "error")  # it has events, none of them errors
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_follow_says_when_no_serve_is_running(project: Path, write_events: EventWriter) -> None:
    write_events([log("old news", function="hello")])
    with running_cli(project, "logs", "-f") as proc:
        assert proc.stderr is not None and "no edgecli serve is running" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_logs_read_while_the_writer_is_open(cli: CliRunner, project: Path) -> None:
    writer = StoreWriter(store_of(project), 1000, 1 << 30)
    try:
        writer.write(rows(log("while serving", function="hello")))
        wait_until(
            lambda: _messages(cli("logs").stdout) == ["while serving"], what="the event to be readable"
        )
    finally:
        writer.close()


def test_a_stored_row_that_is_not_an_event_is_skipped(
    cli: CliRunner, project: Path, write_events: EventWriter
) -> None:
    write_events([log("before")])
    with sqlite3.connect(store_of(project)) as conn:  # put there by hand, or by a broken tool
        conn.executemany(
            "INSERT INTO events (ts, kind, level, message, extra) VALUES (?, 'log', 'info', ?, ?)",
            [(time.time(), "x", "not json"), ("yesterday", "y", None), (time.time(), "kept", '{"a": 1}')],
        )
    write_events([log("after")])
    result = cli("logs")
    assert result.returncode == 0, result.stderr
    assert [line.split()[-1] for line in result.stdout.splitlines()] == ["before", "kept", "after"]


def test_logs_and_tasks_read_the_store_in_edgecli_state_dir_as_serve_writes_it(
    cli: CliRunner, tmp_path: Path
) -> None:
    # Where serve keeps its state when EDGECLI_STATE_DIR is set (the pytest plugin's servers do).
    state = tmp_path / "state"
    writer = StoreWriter(state / "events.db", 1000, 1 << 30)
    started = Event("task_start", "task up started", function="hello", task="t-1", fields={"name": "up"})
    writer.write(rows(log("kept elsewhere", function="hello"), started))
    writer.close()
    env = {"EDGECLI_STATE_DIR": str(state)}
    logs = cli("logs", "--json", env=env)
    assert logs.returncode == 0, logs.stderr
    assert [json.loads(line)["message"] for line in logs.stdout.splitlines()] == [
        "kept elsewhere",
        "task up started",
    ]
    tasks = cli("tasks", "--json", env=env)
    assert tasks.returncode == 0, tasks.stderr
    assert [(t["task"], t["name"], t["status"]) for t in map(json.loads, tasks.stdout.splitlines())] == [
        ("t-1", "up", "running")
    ]
    assert "No events recorded yet" in cli("logs").stderr  # the project's own store: none there
