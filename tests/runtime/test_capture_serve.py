"""Real-process: what a function prints is never lost, whatever ends the worker right after, and a
record is never bigger than the cap, however much a function writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import Served, make_project, stored_events, wait_until

from edgecli.log_limits import MAX_MESSAGE

FLOOD = """
import ctypes, os
from starlette.responses import PlainTextResponse

async def handler(req):
    n = int(req.query_params["n"])
    for i in range(n):
        print(f"line {i} " + "x" * 90)          # never yields to the loop
    print("last line")
    then = req.query_params.get("then")
    if then == "segfault":
        ctypes.string_at(0)
    if then == "spin":
        while True:
            pass
    if then == "exit":
        os._exit(0)
    return PlainTextResponse("ok")
"""

BIG = """
import os
from starlette.responses import PlainTextResponse

async def handler(req):
    if req.query_params.get("raw"):
        for _ in range(5):
            os.write(1, b"z" * 1_000_000)      # 5 MB on fd 1, no newline
        os.write(1, b"\\n")
    else:
        print("y" * 3_000_000)
    return PlainTextResponse("ok")
"""

THREADS = """
import threading
from starlette.responses import PlainTextResponse

def lines(prefix):
    for i in range(50):
        print(f"{prefix} {i}")

async def handler(req):
    # A thread printing while the loop is blocked waiting for it: nothing can take its lines meanwhile.
    thread = threading.Thread(target=lines, args=("joined",))
    thread.start()
    thread.join()
    return PlainTextResponse("ok")

def sync_handler(req):
    lines("sync")
    return PlainTextResponse("ok")
"""

SYNC = THREADS.replace("async def handler", "async def unused").replace("def sync_handler", "def handler")

CONFIG = """
[edge_runtime]
policy = "per_worker"
cpu_time_soft_limit_ms = 60000
cpu_time_hard_limit_ms = 120000

[functions.spin]
cpu_time_soft_limit_ms = 1500
cpu_time_hard_limit_ms = 3000
"""

LINES = 20_000


@pytest.fixture
def project(tmp_path: Path) -> Path:
    functions = {"flood": FLOOD, "spin": FLOOD, "big": BIG, "threads": THREADS, "sync": SYNC}
    return make_project(tmp_path, functions, CONFIG)


def lines_of(events: list[dict], request: str | None) -> list[str]:
    """What the function printed (info), not serve's own error line about a limit."""
    return [
        e["message"]
        for e in events
        if e["kind"] == "log" and e["request"] == request and e["level"] == "info"
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("function", "then", "reason"), [("flood", "segfault", "SIGSEGV"), ("spin", "spin", "cpu")]
)
def test_every_printed_line_is_kept_when_the_worker_dies_right_after(
    project: Path, function: str, then: str, reason: str
) -> None:
    with Served(project) as srv:
        r = srv.get(function, params={"n": LINES, "then": then}, timeout=90)
        assert r.status_code in (500, 546), r.text
        request = r.headers["x-request-id"]
        srv.wait_event(lambda e: e["kind"] == "shutdown" and reason in e["reason"], timeout=60)
        wait_until(lambda: len(lines_of(srv.events(), request)) >= LINES + 1, 30, what="every line")
        lines = lines_of(srv.events(), request)
        assert lines[0].startswith("line 0 ") and lines[LINES - 1].startswith(f"line {LINES - 1} ")
        assert lines[LINES] == "last line" and len(lines) == LINES + 1
        assert srv.get("big").status_code == 200  # serve is fine
    kept = [e for e in stored_events(project / "supabase/.temp/edgecli/events.db") if e.request == request]
    assert sum(e.kind == "log" and e.level == "info" for e in kept) == LINES + 1  # the store has them all


@pytest.mark.timeout(120)
def test_the_last_lines_of_a_worker_that_exits_are_kept(project: Path) -> None:
    # The fork server's report of the exit may reach serve before the worker's last bytes on its socket.
    with Served(project) as srv:
        requests = []
        for _ in range(10):
            r = srv.get("flood", params={"n": 2000, "then": "exit"})
            assert r.status_code == 500
            requests.append(r.headers["x-request-id"])
        wait_until(lambda: len(srv.events(kind="shutdown", function="flood")) >= 10, 30, what="10 exits")
        for request in requests:
            lines = lines_of(srv.events(), request)
            assert len(lines) == 2001 and lines[-1] == "last line", (request, len(lines))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("function", "prefix"), [("threads", "joined"), ("sync", "sync")])
def test_lines_printed_in_threads_are_kept_with_their_request(
    project: Path, function: str, prefix: str
) -> None:
    with Served(project) as srv:
        r = srv.get(function, timeout=30)
        assert r.status_code == 200
        # A plain threading.Thread starts with an empty context, so its lines carry no request id; a
        # sync handler's thread runs in the request's context.
        request = r.headers["x-request-id"] if function == "sync" else None
        wait_until(lambda: len(lines_of(srv.events(function=function), request)) >= 50, 20, what="50 lines")
        assert lines_of(srv.events(function=function), request) == [f"{prefix} {i}" for i in range(50)]


@pytest.mark.timeout(60)
def test_records_are_capped_and_raw_output_split_at_the_cap(project: Path) -> None:
    with Served(project) as srv:
        r = srv.get("big")
        big = srv.wait_event(kind="log", request=r.headers["x-request-id"], timeout=30)
        assert len(big["message"]) < MAX_MESSAGE + 50
        assert big["message"].endswith("[truncated: 3,000,000 characters]")
        r = srv.get("big", params={"raw": "1"})
        assert r.status_code == 200

        # Raw output (fd 1) goes through a pipe, not the worker's socket: what serve reads of it after the
        # response has ended belongs to no request (no request is in flight then), so it is counted by
        # what it says rather than by request.
        def raw() -> list[str]:
            return [e["message"] for e in srv.events(kind="log", function="big") if e["message"][:1] == "z"]

        wait_until(lambda: sum(map(len, raw())) >= 5_000_000, 30, what="5 MB of raw records")
        assert len(raw()) == 500 and {len(m) for m in raw()} == {MAX_MESSAGE}
