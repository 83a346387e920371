"""Real-process: clients that drip a body or speak broken HTTP get a bounded answer, and serve stays up."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from serving import Served, make_project

ECHO = """
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse(str(len(await req.body())))
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"

[functions.echo]
request_idle_timeout_sec = 2
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, {"echo": ECHO}, CONFIG)


def read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


@pytest.mark.timeout(60)
def test_a_body_dripped_a_byte_at_a_time_is_cut_off_at_the_idle_timeout(project: Path) -> None:
    """No single gap is long enough to count as a stall; the request as a whole is still bounded."""
    with Served(project) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(b"POST /functions/v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
            started = time.monotonic()
            sock.settimeout(0.3)
            answer = b""
            while not answer and time.monotonic() - started < 20:
                try:
                    sock.sendall(b"x")
                    answer = sock.recv(4096)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            elapsed = time.monotonic() - started
            sock.settimeout(10)
            try:
                answer += read_all(sock)
            except ConnectionResetError:
                pass
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert elapsed < 15, f"the dripped request ran {elapsed:.1f} s"
        assert srv.post("echo", content=b"abc").text == "3"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # TLS to a plain port
        b"GET /functions/v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n",
        b"POST /functions/v1/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET /functions/v1/echo HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /functions/v1/echo HTTP/7.1\r\nhost: x\r\n\r\n",
    ],
    ids=["tls", "bad-length", "bad-chunk", "bad-header", "bad-version"],
)
def test_malformed_http_is_refused_and_serve_stays_up(project: Path, garbage: bytes) -> None:
    with Served(project) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            try:
                sock.sendall(garbage)
                answer = read_all(sock)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""  # closed on us mid-send: refused as well
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert srv.post("echo", content=b"abc").text == "3"
        assert "Traceback" not in srv.output()
