"""Real-process: under `serve --prod --workers 2`, stdout is a pipe (as a container's log is) and every
line on it is a whole line of one replica, even lines longer than a pipe writes atomically (4 KB)."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving import Served, make_project, wait_until

LOUD = """
import os
from starlette.responses import PlainTextResponse

async def handler(req):
    for i in range(10):
        print(f"LINE-{os.getpid()}-{i}-" + "x" * 9000)
    return PlainTextResponse(str(os.getpid()))
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"
max_parallelism = 1
"""


@pytest.mark.timeout(120)
def test_long_lines_of_two_replicas_reach_a_stdout_pipe_whole(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"loud": LOUD}, CONFIG)
    srv = Served(project, "--prod", "--workers", "2", json_output=False)
    os.mkfifo(srv.out_path)  # serve's stdout (and stderr) is then a pipe, read here
    received: list[bytes] = []

    def read() -> None:
        with open(srv.out_path, "rb") as pipe:
            while chunk := pipe.read(65536):
                received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    answered: set[str] = set()
    with srv:

        def call(_: int) -> str:
            with httpx.Client(base_url=srv.base_url, timeout=30) as client:  # a fresh connection each
                r = client.get("/functions/v1/loud")
            assert r.status_code == 200, r.text
            return r.text

        wait_until(lambda: len({call(0) for _ in range(10)}) == 2, 30, what="both replicas to answer")
        with ThreadPoolExecutor(8) as pool:
            answered.update(pool.map(call, range(200)))
    reader.join(10)
    assert not reader.is_alive()
    lines = b"".join(received).split(b"\n")
    assert lines[-1] == b""
    seen: set[str] = set()
    for line in lines[:-1]:
        record = json.loads(line)  # a line cut by another's would not parse
        message = record.get("message", "")
        if message.startswith("LINE-"):
            pid, _, rest = message[5:].partition("-")
            assert rest.split("-", 1)[1] == "x" * 9000, message[:80]
            seen.add(pid)
    assert len(answered) == 2
    assert seen == answered  # long lines of both replicas' workers made it
