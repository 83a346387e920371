"""Real-process tests: a client that hangs up never wedges a function, under any policy."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from serving import Served, make_project

STREAM = """
import asyncio
from starlette.responses import PlainTextResponse, StreamingResponse

async def handler(req):
    if req.query_params.get("stream"):
        async def ticks():
            while True:
                yield "data: tick\\n\\n"
                await asyncio.sleep(0.05)
        return StreamingResponse(ticks(), media_type="text/event-stream")
    return PlainTextResponse("ok")
"""

CONFIG = """
[edge_runtime]
policy = "{policy}"
graceful_exit_timeout_sec = 60
request_wait_timeout_ms = 60000
"""


def abandon_stream(port: int) -> None:
    """What `curl -N .../sse | head -1` does: read the first event, then hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /functions/v1/sse?stream=1 HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while b"data: tick" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk


@pytest.mark.timeout(240)
@pytest.mark.parametrize("policy", ["per_worker", "per_request", "oneshot"])
def test_two_hundred_abandoned_streams_leave_the_function_answering(tmp_path: Path, policy: str) -> None:
    project = make_project(tmp_path, {"sse": STREAM}, CONFIG.format(policy=policy))
    srv = Served(project).start()
    try:
        for _ in range(200):
            abandon_stream(srv.port)
        r = srv.get("sse", timeout=30)  # a slot is free: not a 504 after request_wait_timeout_ms (60 s)
        assert (r.status_code, r.text) == (200, "ok")
        srv.wait_event(kind="request", status=200)
        statuses = [e["status"] for e in srv.events(kind="request")]
        assert statuses == [499] * 200 + [200]  # each abandoned request is recorded as the client closed it
    finally:
        code = srv.stop(timeout=30)  # graceful_exit_timeout_sec is 60: nothing may wait for it
    assert code == 0, srv.output()[-3000:]
