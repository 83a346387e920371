"""Real-process: a request head is bounded by size (431) and by time (408 and closed); serve stays up."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

HELLO = """
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse("hi " + str(len(req.headers.get("x-big", ""))))
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"
request_head_timeout_sec = 1.5

[functions.hello]
verify_jwt = false
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, {"hello": HELLO}, CONFIG)


def read_all(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def head(big: int) -> bytes:
    return (
        b"GET /functions/v1/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: "
        + b"a" * big
        + b"\r\n\r\n"
    )


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    raw_head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = raw_head.decode().split("\r\n")
    fields = (line.split(": ", 1) for line in lines)
    return status, {name.lower(): value for name, value in fields}, body


@pytest.mark.timeout(60)
def test_an_oversize_head_gets_431_and_serve_keeps_serving(project: Path) -> None:
    with Served(project) as srv:
        for chunked in (False, True):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                if chunked:  # a header the parser has not seen the end of: just over the bound, so that
                    # serve has read it all when it answers (unread bytes would make its close a reset)
                    data = head(72_000)[:-4]
                    for start in range(0, len(data), 8192):
                        sock.sendall(data[start : start + 8192])
                        time.sleep(0.001)  # separate reads
                else:
                    sock.sendall(head(100_000))
                status, headers, body = split(read_all(sock))
            assert status == "HTTP/1.1 431 Request Header Fields Too Large"
            assert headers["sb-error-code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
            assert headers["content-type"] == "application/json"
            assert headers["x-request-id"]
            assert json.loads(body)["code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        # A head under the bound is served, on the same server.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(head(32_000))
            status, _, body = split(read_all(sock))
        assert status == "HTTP/1.1 200 OK"
        assert body == b"hi 32000"
        assert srv.get("hello").text == "hi 0"
        # A large body sent with its head in one write is no part of the head.
        assert srv.post("hello", content=b"b" * 300_000).text == "hi 0"
        # serve's terminal says what happened to each refused head, not uvicorn's "invalid request".
        wait_until(lambda: srv.output().count("answered 431") == 2, 10, what="two 431 lines")
        assert "Invalid HTTP request received" not in srv.output()


@pytest.mark.timeout(60)
def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_head_timeout(project: Path) -> None:
    with Served(project) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            started = time.monotonic()
            sock.settimeout(0.2)
            answer = b""
            for byte in head(1000):
                if time.monotonic() - started > 15:
                    break
                try:
                    sock.sendall(bytes([byte]))
                    answer = sock.recv(4096)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                break  # recv returned: an answer, or the connection closed
            elapsed = time.monotonic() - started
            sock.settimeout(10)
            answer += read_all(sock)
        assert 1.0 < elapsed < 6, elapsed
        status, headers, body = split(answer)
        assert status == "HTTP/1.1 408 Request Timeout"
        assert headers["sb-error-code"] == "REQUEST_TIMEOUT"
        assert "request_head_timeout_sec" in json.loads(body)["message"]
        # A connection that sends nothing is closed too, without an answer.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            assert read_all(sock) == b""
        assert srv.get("hello").text == "hi 0"
