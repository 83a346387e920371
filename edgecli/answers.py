"""The responses edgecli makes itself, in place of a function's: 404, 401, 413, 5xx and the rest.

Shared by the relay (before a worker is involved), the exchange (when a worker fails to answer) and a
worker answering a lent connection itself (edgecli/runtime/lent.py), so that each says the same. Each
carries `x-request-id`, and the error ones `sb-error-code`, as Supabase's do; to a WebSocket, the answer
is the HTTP response that refuses its handshake.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

JSON = "application/json"
ERROR_CODE = b"sb-error-code"
REQUEST_ID = b"x-request-id"
LIMIT_NAMES = {"wall_clock": "wall clock", "cpu": "CPU time", "memory": "memory"}


_request_counter: Iterator[int]
_random_bits: Callable[[int], int]


def _seed_request_ids() -> None:
    global _request_counter, _random_bits
    _request_counter = itertools.count(int.from_bytes(os.urandom(4)))
    _random_bits = random.Random(os.urandom(16)).getrandbits


_seed_request_ids()
# A worker forked from the fork server would otherwise make the same ids as its siblings.
os.register_at_fork(after_in_child=_seed_request_ids)
_VERSION_8 = (0x8 << 76) | (0b10 << 62)  # the version nibble and RFC 4122's variant bits
_RANDOM_MASK = ((1 << 96) - 1) & ~((0xF << 76) | (0b11 << 62))


def new_request_id() -> str:
    value = (next(_request_counter) & 0xFFFFFFFF) << 96 | _random_bits(96) & _RANDOM_MASK | _VERSION_8
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def json_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


async def plain(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    content_type: str = "text/plain; charset=utf-8",
    error_code: str | None = None,
    close: bool = False,
) -> int:
    """A response edgecli makes itself; to a WebSocket, as the HTTP response that refuses it."""
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID, request_id.encode("latin-1")),
    ]
    if error_code is not None:
        headers.append((ERROR_CODE, error_code.encode()))
    if close:
        headers.append((b"connection", b"close"))
    prefix = "websocket.http" if scope["type"] == "websocket" else "http"
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})
    return status


async def too_large(scope: Scope, send: Send, request_id: str, limit_mb: float) -> int:
    body = json_body(
        "PAYLOAD_TOO_LARGE",
        f"The request body is larger than max_body_mb ({limit_mb:g} MB): raise max_body_mb in "
        "[edge_runtime] or [functions.<name>] of config.toml to accept it.",
    )
    # connection: close, so that uvicorn does not read the rest of a body nobody wants.
    return await plain(scope, send, 413, body, request_id, JSON, "PAYLOAD_TOO_LARGE", close=True)


def failure(
    lost: bool, kill_reason: str | None, deadline: str | None, request_id: str
) -> tuple[int, str, bytes]:
    """What to answer for a request its worker lost (`lost`: it died, `kill_reason` says whether a limit
    killed it) or failed: status, sb-error-code, body. `deadline`: serve's drain deadline that cut it off,
    if one did."""
    if lost:
        if kill_reason in LIMIT_NAMES:
            body = json_body(
                "WORKER_LIMIT", f"Worker was terminated: {LIMIT_NAMES[kill_reason]} limit reached"
            )
            return 546, "WORKER_LIMIT", body
        what = "The worker exited before sending a response"
    else:
        what = "The function raised an error or returned no response"
    if deadline is not None:  # see docs/architecture.md, "Workers"
        what += f", cut off by serve's {deadline} deadline (graceful_exit_timeout_sec)"
    # The error's own text may hold secrets: it stays in the logs, where the message points.
    message = (
        f"{what} (request {request_id}): the details are in serve's log records of the request "
        f"(`edgecli logs --request {request_id}`, or serve's output under --prod)."
    )
    return 500, "WORKER_ERROR", json_body("WORKER_ERROR", message)


async def worker_failed(
    lost: bool, kill_reason: str | None, deadline: str | None, scope: Scope, send: Send, request_id: str
) -> int:
    """`failure`'s answer, sent."""
    status, code, body = failure(lost, kill_reason, deadline, request_id)
    return await plain(scope, send, status, body, request_id, JSON, code)


def whole_response(status: int, code: str, body: bytes, request_id: str) -> bytes:
    """A JSON error response as bytes, for a socket no HTTP protocol is running on; the connection closes
    after it. The status line's phrase is uvicorn's (none for a status HTTP does not name, like 546)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {JSON}\r\ncontent-length: {len(body)}\r\n"
        f"{REQUEST_ID.decode()}: {request_id}\r\n{ERROR_CODE.decode()}: {code}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
