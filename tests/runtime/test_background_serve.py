"""Real-process tests: Starlette `BackgroundTask` and FastAPI `BackgroundTasks` are tracked tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serving import Served, make_project

FUNCTIONS = {
    "star": """
import asyncio
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse

async def send_welcome(to):
    await asyncio.sleep(float(to))
    print("welcome sent")

async def handler(req):
    return PlainTextResponse("ok", background=BackgroundTask(send_welcome, req.query_params.get("s", "0.2")))
""",
    "fast": """
from fastapi import BackgroundTasks, FastAPI

app = FastAPI()

def write_audit(entry):
    print("audit", entry)

@app.get("/fast")
async def index(tasks: BackgroundTasks):
    tasks.add_task(write_audit, "one")
    tasks.add_task(write_audit, "two")
    return {"ok": True}
""",
}

CONFIG = """
[edge_runtime]
policy = "{policy}"
"""


@pytest.mark.timeout(60)
def test_background_tasks_are_recorded_and_listed(tmp_path: Path) -> None:
    project = make_project(tmp_path, FUNCTIONS, CONFIG.format(policy="per_worker"))
    with Served(project) as srv:
        r = srv.get("star")
        assert r.text == "ok"
        request_id = r.headers["x-request-id"]
        end = srv.wait_event(kind="task_end", request=request_id)
        assert (end["name"], end["status"]) == ("send_welcome", "completed")
        assert srv.events(kind="task_start", request=request_id)[0]["name"] == "send_welcome"
        assert srv.events(kind="log", message="welcome sent")[0]["task"] == end["task"]

        r = srv.get("fast")
        fast_id = r.headers["x-request-id"]
        srv.wait_event(lambda e: len(srv.events(kind="task_end", request=fast_id)) == 2)
        ends = srv.events(kind="task_end", request=fast_id)
        assert [(e["name"], e["status"]) for e in ends] == [("write_audit", "completed")] * 2
        audit = [e["message"] for e in srv.events(kind="log") if e["message"].startswith("audit")]
        assert audit == ["audit one", "audit two"]  # in turn, as Starlette runs them

    listed = subprocess.run(
        [sys.executable, "-m", "edgecli", "tasks", "--json", "--workdir", str(project)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    tasks = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(t["name"] for t in tasks) == ["send_welcome", "write_audit", "write_audit"]


@pytest.mark.timeout(60)
def test_oneshot_cuts_a_background_task_off_with_the_warning(tmp_path: Path) -> None:
    project = make_project(tmp_path, FUNCTIONS, CONFIG.format(policy="oneshot"))
    with Served(project) as srv:
        r = srv.get("star", params={"s": "30"})
        end = srv.wait_event(kind="task_end", request=r.headers["x-request-id"])
        assert (end["name"], end["status"], end["reason"]) == ("send_welcome", "cancelled", "termination")
        warning = srv.wait_event(lambda e: "cut off" in e["message"], kind="log")
        assert "per_worker" in warning["message"]


@pytest.mark.timeout(60)
def test_wait_until_in_a_sync_handler_runs_its_task_on_the_worker_s_loop(tmp_path: Path) -> None:
    """A sync handler runs in a thread, where no loop runs; its task still runs, for its request."""
    sync = """
import asyncio
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def notify(name):
    await asyncio.sleep(0.1)
    print("notified", name)

def handler(req):
    task = EdgeRuntime.wait_until(notify("ann"))
    return PlainTextResponse(f"ok {type(task).__name__}")
"""
    project = make_project(tmp_path, {"sync": sync}, CONFIG.format(policy="per_worker"))
    with Served(project) as srv:
        r = srv.get("sync")
        assert (r.status_code, r.text) == (200, "ok Task")
        end = srv.wait_event(kind="task_end", request=r.headers["x-request-id"])
        assert (end["name"], end["status"]) == ("notify", "completed")
        assert srv.events(kind="log", message="notified ann")[0]["task"] == end["task"]
