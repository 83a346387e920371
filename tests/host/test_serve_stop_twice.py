"""Ctrl-C with background tasks running: serve says what it waits for, and a second Ctrl-C stops now."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from serving import Served, make_project, stored_events, wait_until

from edgecli.config import Config

SLOW_TASK = """
import asyncio
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def handler(req):
    EdgeRuntime.wait_until(asyncio.sleep(120))
    return PlainTextResponse("ok")
"""
CONFIG = '[edge_runtime]\npolicy = "per_worker"\ngraceful_exit_timeout_sec = 40\n'


@pytest.mark.timeout(60)
def test_a_second_ctrl_c_cancels_the_tasks_it_was_waiting_for(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"bg": SLOW_TASK}, CONFIG)
    srv = Served(project).start()
    try:
        assert srv.get("bg").text == "ok" and srv.get("bg").text == "ok"
        wait_until(lambda: len(srv.events(kind="task_start")) == 2, what="both tasks to start")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)
        notice = wait_until(
            lambda: next((line for line in srv.output().splitlines() if "Stopping:" in line), None),
            what=f"the notice of what serve waits for\n{srv.output()}",
        )
        assert "waiting up to 40 s (until " in notice and "for 2 background tasks of bg to finish" in notice
        assert "Ctrl-C again" in notice
        stopped_at = time.monotonic()
    finally:
        code = srv.stop(signal.SIGINT)  # the second Ctrl-C; asserts no process is left
    assert code == 0
    assert time.monotonic() - stopped_at < 20  # not the 40 s it would have waited
    ends = srv.events(kind="task_end")
    assert [(e["status"], e["reason"]) for e in ends] == [("cancelled", "termination")] * 2
    stored = [e for e in stored_events(Config(project_dir=project).events_db) if e.kind == "task_end"]
    assert [(e.fields["status"], e.fields["reason"]) for e in stored] == [("cancelled", "termination")] * 2
