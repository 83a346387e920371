"""Warm the fork server up before it forks anything: every worker then starts from warmed-up memory.

A forked worker shares the fork server's memory until it writes to it, and each page it writes costs a
copy-on-write fault (several µs each in a VM). CPython writes to memory it merely *runs*: the first
runs of a function rewrite its bytecode in place (3.11's specializing interpreter), the first lookups
of a type's attributes fill the type cache, lazy imports happen on first use. Done once here, none of
that is redone, page by page, in every worker: measured ~10 % fewer page faults per oneshot instance.

The warm-up drives one request through the same code a worker runs (the wire protocol's scope and
frames, the handler wrapper, a Starlette JSON response, an event row) on a private event loop that is
closed again, and leaves no thread, loop or global state behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgecli import ipc
from edgecli.events import Event
from edgecli.runtime.loader import handler_app

ROUNDS = 16  # enough for 3.11 to specialize what a request runs (its counters trip after a few runs)
_SCOPE = {
    "method": "POST",
    "path": "/warmup",
    "raw_path": b"/warmup",
    "query_string": b"a=1",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


async def _handler(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"message": "warm", "echo": body, "path": request.url.path})


async def _one_request(channel: int) -> int:
    app = handler_app(_handler)
    scope, request_id = ipc.decode_scope(ipc.encode_scope(_SCOPE, f"warmup-{channel}"))
    frames: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"name": "warm"}', "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:  # as the worker encodes it
        start = message["type"] == "http.response.start"
        frames.append(ipc.start_frame(channel, message) if start else ipc.body_frame(channel, message))

    await app(scope, receive, send)
    event = Event("request", "POST /warmup 200", request=request_id, fields={"status": 200})
    Event.from_row_json(event.to_row_json())
    (kind, _, _, start), _ = ipc.FrameParser().feed(b"".join(frames))
    return int(ipc.loads(start)["status"]) if kind == ipc.Kind.START else 0


async def _rounds(rounds: int) -> int:
    return sum([await _one_request(channel) == 200 for channel in range(rounds)])


def warm_up(rounds: int = ROUNDS) -> int:
    """Run `rounds` requests' worth of worker code on a loop of its own, then close that loop.
    Returns how many of them got their 200 (all of them, unless the request path is broken)."""
    from edgecli.runtime.worker import run_loop  # the same loop implementation the workers run

    served = run_loop(_rounds(rounds))
    asyncio.set_event_loop(None)
    return served
