"""`edgecli functions list [--json]` / `edgecli list`: the configuration alone, then with a running serve
its workers, their state and requests served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from serving import Served, make_project

HELLO = """
from starlette.responses import PlainTextResponse


async def handler(req):
    return PlainTextResponse("hi")
"""
CONFIG = """
[edge_runtime]
max_parallelism = 1

[functions.hello]
memory_limit_mb = 128
static_files = ["./functions/hello/*.html"]

[functions.off]
enabled = false
"""


def listed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecli", *args, "--workdir", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def records(root: Path) -> dict[str, dict[str, Any]]:
    result = listed(root, "functions", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.timeout(120)
def test_functions_list_without_and_with_a_running_serve(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": HELLO, "off": HELLO, "deps": HELLO, "broken": HELLO}, CONFIG)
    functions = root / "supabase" / "functions"
    (functions / "hello" / "page.html").write_text("<p>hi</p>")
    (functions / "deps" / "requirements.txt").write_text("")
    (functions / "broken" / "requirements.txt").write_text("--no-index\nedgecli-no-such-package\n")
    before = records(root)
    hello = before["hello"]
    assert hello["entrypoint"] == "supabase/functions/hello/index.py" and hello["verify_jwt"] is True
    assert hello["limits"]["memory_limit_mb"] == 128 and hello["policy"] == "per_worker"
    assert hello["static_files"] == ["supabase/functions/hello/page.html"]
    assert (hello["serving"], hello["workers"], hello["requests"]) == (False, [], None)
    assert before["deps"]["dependencies"] == "supabase/functions/deps/requirements.txt"
    assert before["off"]["enabled"] is False and "disabled" in before["off"]["skipped"]

    with Served(root) as srv:  # with --no-verify-jwt: what is in force is what the list shows
        for _ in range(3):
            assert srv.get("hello").text == "hi"
        during = records(root)
        hello = during["hello"]
        assert hello["serving"] is True and hello["requests"] == 3 and hello["verify_jwt"] is False
        [worker] = hello["workers"]
        assert worker["state"] == "ready" and worker["requests"] == 3 and worker["pid"] in srv.worker_pids()
        srv.wait_event(kind="boot_error", function="broken")
        assert "requirements.txt failed" in records(root)["broken"]["boot_error"]
        table = listed(root, "list")
        assert table.returncode == 0 and f"pid {srv.proc.pid if srv.proc else ''}" in table.stdout
        assert "1 (ready)" in table.stdout
    assert records(root)["hello"]["serving"] is False  # serve has gone: back to the configuration alone


@pytest.mark.timeout(120)
def test_two_serves_of_one_project_are_both_listed_and_one_leaving_leaves_the_other(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"hello": HELLO, "other": HELLO}, CONFIG)
    with Served(root) as every:
        with Served(root, "hello") as only_hello:
            for srv in (every, only_hello, only_hello):
                assert srv.get("hello").text == "hi"
            during = records(root)
            hello = during["hello"]
            assert hello["serving"] is True and hello["requests"] == 3
            pids = {worker["pid"] for worker in hello["workers"]}
            assert len(pids) == 2  # one warm worker in each serve
            assert pids & set(every.worker_pids()) and pids & set(only_hello.worker_pids())
            assert during["other"]["serving"] is True and len(during["other"]["workers"]) == 1
            table = listed(root, "list").stdout
            assert every.proc is not None and only_hello.proc is not None
            assert f"pid {every.proc.pid}" in table and f"pid {only_hello.proc.pid}" in table
        after = records(root)  # the serve that left took only its own status away
        assert after["hello"]["serving"] is True and len(after["hello"]["workers"]) == 1
