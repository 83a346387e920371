"""Real processes end to end: `edgecli serve` writes the store; invoke --wait, logs, logs -f and tasks read
it while serve runs, after it stopped, and after it was killed; serve's own terminal lines."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from inspect_helpers import cli_command, cli_env, running_cli
from serving import Served, make_project, wait_until

from edgecli.events import BASE_FIELDS

FUNCTION = """
import asyncio
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime

async def ok():
    await asyncio.sleep(0.3)
    print("ok task done")

async def bad():
    await asyncio.sleep(0.1)
    raise ValueError("bad task")

async def forever():
    await asyncio.sleep(3600)

@EdgeRuntime.on("unhandledrejection")
def keep_worker(ev):
    ev.prevent_default()

async def handler(req):
    body = await req.json() if await req.body() else {}
    print("handling", body.get("mode", "ok"))
    EdgeRuntime.wait_until(ok())
    if body.get("mode") == "fail":
        EdgeRuntime.wait_until(bad())
    if body.get("mode") == "hang":
        EdgeRuntime.wait_until(forever())
    return JSONResponse({"mode": body.get("mode", "ok")})
"""
CONFIG = '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "per_worker"\ngraceful_exit_timeout_sec = 1\n'


def _cli(project: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), cwd=project, capture_output=True, text=True, timeout=timeout, env=cli_env()
    )


def _request_id(invoke_stdout: str) -> str:
    match = re.search(r"^x-request-id: (\S+)$", invoke_stdout, re.MULTILINE)
    assert match, invoke_stdout
    return match.group(1)


def _tasks(project: Path) -> list[dict[str, object]]:
    result = _cli(project, "tasks", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.timeout(90)
def test_invoke_wait_logs_and_tasks_while_serve_runs_and_after_it_stops(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"work": FUNCTION}, CONFIG)
    with Served(project) as srv:
        failed = _cli(
            project, "invoke", "work", "--url", srv.base_url, "--data", '{"mode": "fail"}', "--wait"
        )
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "HTTP 200 OK" in failed.stdout and "handling fail" in failed.stdout
        assert "ok task done" in failed.stdout and "ValueError: bad task" in failed.stdout
        assert failed.stdout.rstrip().endswith("2 tasks: 1 completed, 1 failed")

        passed = _cli(project, "invoke", "work", "--url", srv.base_url, "--data", '{"mode": "ok"}', "--wait")
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert passed.stdout.rstrip().endswith("1 task: 1 completed")

        request = _request_id(passed.stdout)
        logs = _cli(project, "logs", "--request", request)
        assert "handling ok" in logs.stdout and "POST /functions/v1/work → 200" in logs.stdout
        assert "handling fail" not in logs.stdout

        tasks = _tasks(project)
        assert sorted(str(t["status"]) for t in tasks) == ["completed", "completed", "failed"]
        bad = next(t for t in tasks if t["status"] == "failed")
        assert (
            bad["function"] == "work" and bad["name"] == "bad" and "ValueError: bad task" in str(bad["error"])
        )
        show = _cli(project, "tasks", "show", str(bad["task"]))
        # A listener called prevent_default(): the failure is one line, no traceback.
        assert (
            show.returncode == 0
            and "ValueError: bad task" in show.stdout
            and "raise ValueError" not in show.stdout
        )

    # serve has stopped: everything is still there to read.
    assert len(_tasks(project)) == 3
    after = _cli(project, "logs", "--json", "-n", "1000")
    kinds = {json.loads(line)["kind"] for line in after.stdout.splitlines()}
    assert {"boot", "request", "log", "task_start", "task_end", "shutdown"} <= kinds


@pytest.mark.timeout(45)
def test_logs_follow_sees_new_requests_while_serve_runs(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"work": FUNCTION}, CONFIG)
    with Served(project) as srv:
        srv.wait_event(kind="boot")
        with running_cli(
            project, "logs", "-f", "-n", "1", "--function", "work", "--level", "info"
        ) as follower:
            assert follower.stdout is not None
            assert "worker booted" in follower.stdout.readline()  # following from here on
            assert srv.post("work", json={"mode": "followed"}).status_code == 200
            for line in follower.stdout:
                if "handling followed" in line:
                    break
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 0


@pytest.mark.timeout(90)
def test_the_store_stays_readable_after_serve_is_killed(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"work": FUNCTION}, CONFIG)
    srv = Served(project).start()
    try:
        assert srv.post("work", json={"mode": "hang"}).status_code == 200

        def stored() -> dict[object, object]:
            return {t["name"]: t["status"] for t in _tasks(project)}

        expected = {"ok": "completed", "forever": "running"}
        wait_until(lambda: stored() == expected, timeout=15, what="one task ended, one running, on disk")
    finally:
        srv.stop(signal.SIGKILL)
    assert stored() == {"ok": "completed", "forever": "running"}  # nobody was left to end the second
    logs = _cli(project, "logs", "--function", "work")
    assert logs.returncode == 0 and "handling hang" in logs.stdout


@pytest.mark.timeout(60)
def test_serve_terminal_lines_and_json_records(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"work": FUNCTION}, CONFIG)
    with Served(project, json_output=False) as srv:
        assert srv.post("work", json={"mode": "fail"}).status_code == 200
        wait_until(lambda: "task bad failed" in srv.output(), what=f"the failed task line\n{srv.output()}")
    text = srv.output()
    assert "Serving functions on " in text and f"{srv.base_url}/functions/v1/work" in text
    lines = text.splitlines()
    request = next(line for line in lines if "POST /functions/v1/work → 200" in line)
    handling = next(line for line in lines if line.endswith("handling fail"))
    # Aligned columns: the message starts at the same place on every event line.
    assert request.index("POST") == handling.index("handling")
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} work +\w+ +req \w+ +INFO  POST", request)
    assert text.count("ValueError: bad task") == 1  # handled by prevent_default(): one line, no traceback

    with Served(make_project(tmp_path / "json", {"work": FUNCTION}, CONFIG)) as srv:
        assert srv.post("work", json={"mode": "ok"}).status_code == 200
        end = srv.wait_event(kind="task_end")
    assert all(set(BASE_FIELDS) <= set(record) for record in srv.events())
    assert {"name", "status", "duration_ms", "error", "reason"} <= set(end)
