"""A failed background task and its `unhandledrejection` listeners, in a real serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import Served, make_project

FUNCTION = """
import asyncio
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

@EdgeRuntime.on("unhandledrejection")
def listener(ev):
    print("listener saw", type(ev.reason).__name__)
    if "handled" in str(ev.reason):
        ev.prevent_default()

async def job(what):
    await asyncio.sleep(0.01)
    raise ValueError(what)

async def handler(req):
    EdgeRuntime.wait_until(job(req.query_params["what"]))
    return PlainTextResponse("ok")
"""


@pytest.mark.timeout(60)
def test_listener_output_belongs_to_the_task_and_a_handled_failure_is_one_line(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"rej": FUNCTION})) as srv:
        assert srv.get("rej", params={"what": "handled"}).text == "ok"
        end = srv.wait_event(kind="task_end")
        said = srv.wait_event(kind="log", message="listener saw ValueError")
        assert said["task"] == end["task"] and said["request"] == end["request"]
        assert end["status"] == "failed" and end["level"] == "warning"
        assert (
            end["error"] == "ValueError: handled"
            and "handled by an unhandledrejection listener" in end["message"]
        )
        assert not srv.events(kind="log", level="error")  # no traceback logged anywhere

        assert srv.get("rej", params={"what": "not caught"}).text == "ok"
        failed = srv.wait_event(lambda e: e["kind"] == "task_end" and e["task"] != end["task"])
        assert failed["level"] == "error" and "Traceback (most recent call last)" in failed["error"]
