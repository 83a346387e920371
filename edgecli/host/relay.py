"""The relay: the ASGI app uvicorn serves. Routing, auth, x-request-id, proxying, error mapping.

`/functions/v1/<name>[/<path>]` goes to a worker of <name> with the scope a bare uvicorn mounted at
`/functions/v1` would give (`root_path`, the full `path`, the client's own `raw_path`). Request and
response bodies stream both ways over the worker's socket with the wire's flow control (ipc.py);
WebSockets are relayed message by message. When the client leaves, the relay tells the worker and frees
the request's slot itself, whatever the worker does next. Whatever goes wrong maps to the status codes
Supabase returns, with `sb-error-code`, and every response carries `x-request-id`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from edgecli import events
from edgecli.answers import (
    JSON,
    REQUEST_ID,
    Receive,
    Scope,
    Send,
    json_body,
    new_request_id,
    plain,
    too_large,
)
from edgecli.events import Event
from edgecli.host.auth import AuthFailure, Verifier, claims_header
from edgecli.host.connection import BootError
from edgecli.host.exchange import CLIENT_CLOSED, MB, Exchange
from edgecli.host.lending import Offer, offer_lend
from edgecli.host.pool import NoWorkerAvailable, PerWorkerPool, Pool
from edgecli.host.websocket import SocketExchange
from edgecli.host.worker import Worker
from edgecli.idle_watch import IdleWatch
from edgecli.routing import CLAIMS, ROOT_PATH, function_name, inbound
from edgecli.routing import text as _text

# A request id is a UUID of RFC 9562's vendor-specific version 8: its first 32 bits count this serve's
# requests from a random start, the other bits are random. Counted rather than all random because the
# event store indexes events by request: a random key dirties another index page for every event, keys
# in order fill the same few (the store's CPU per event, bench/README.md). The first 8 hex digits, which
# the terminal prints and the --request filters accept, still tell a run's requests apart. The random
# bits come from a seeded PRNG: ids are labels, not secrets.


class Relay:
    def __init__(
        self,
        pools: Mapping[str, Pool],
        verifier: Verifier,
        emit: Callable[[Event], None],
        verify_jwt: bool = True,
        health: tuple[str, Callable[[], tuple[int, bytes]]] | None = None,
        lending: bool = False,
    ) -> None:
        self.pools = pools
        self.verifier = verifier
        self.emit = emit
        self.verify_jwt = verify_jwt
        self.health = health  # (path, answer) under `serve --prod`: see edgecli/host/health.py
        self.lending = lending  # connections may be lent to workers (edgecli/host/lending.py)
        self.idle_watch: IdleWatch[Exchange] = (
            IdleWatch()
        )  # the idle timeouts of the requests waiting for a response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # lifespan: serve runs uvicorn with lifespan="off"
        started = time.perf_counter()
        headers, picked = inbound(scope["headers"])
        # The client's own x-request-id when it sent a non-empty one, else a new one.
        request_id = _text(picked.get(REQUEST_ID)) or new_request_id()
        if self.health is not None and scope["path"] == self.health[0]:
            status, body = self.health[1]()
            await plain(scope, send, status, body, request_id, "application/json")
            return
        name = self.route(scope["path"])
        pool = self.pools.get(name) if name else None
        status, worker = 500, None
        try:
            if pool is None:
                status = await plain(scope, send, 404, b"Function not found", request_id)
            else:
                status, worker = await self.dispatch(pool, scope, receive, send, request_id, headers, picked)
        finally:
            self.log_request(scope, name if pool else None, worker, request_id, status, started)

    # -- routing ---------------------------------------------------------------------------------------

    @staticmethod
    def route(path: str) -> str:
        return function_name(path)

    # -- one request -----------------------------------------------------------------------------------

    async def dispatch(
        self,
        pool: Pool,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        headers: list[tuple[bytes, bytes]],
        picked: dict[bytes, bytes],
    ) -> tuple[int, Worker | None]:
        """`headers`, `picked`: the scope's headers as `inbound` splits them."""
        verify = self.verify_jwt and pool.function.verify_jwt
        claims: dict[str, Any] | None = None
        if verify and scope.get("method") != "OPTIONS":
            try:
                claims = self.verifier.verify(_text(picked.get(b"authorization")))
            except AuthFailure as exc:
                return await plain(scope, send, exc.status, exc.body, request_id, JSON), None
            headers.append((CLAIMS, claims_header(claims)))
        limits = pool.function.limits
        websocket = scope["type"] == "websocket"
        length = picked.get(b"content-length", b"")
        if limits.max_body_mb and length.isdigit() and int(length) > limits.max_body_mb * MB:
            return await too_large(scope, send, request_id, limits.max_body_mb), None
        first: dict[str, Any] | None = None
        if websocket or picked.get(b"expect", b"").lower() != b"100-continue":
            first = await receive()  # a body waiting for 100-continue is asked for by the app, later
            if first["type"] in ("http.disconnect", "websocket.disconnect"):
                return CLIENT_CLOSED, None
        try:
            worker = await pool.acquire()
        except BootError as exc:
            body = json_body("BOOT_ERROR", f"Function failed to boot: {exc.message}")
            return await plain(scope, send, 503, body, request_id, JSON, "BOOT_ERROR"), None
        except NoWorkerAvailable:
            body = json_body("WORKER_TIMEOUT", "No worker became available within request_wait_timeout_ms")
            return await plain(scope, send, 504, body, request_id, JSON, "WORKER_TIMEOUT"), None
        if (
            self.lending
            and not websocket
            and isinstance(pool, PerWorkerPool)
            and pool.function.runtime != "deno"
        ):
            offer_lend(receive, self.offer(worker, verify, picked, claims))
        # As under uvicorn mounted at /functions/v1: path and raw_path as the client sent them.
        inner = dict(scope, root_path=ROOT_PATH, headers=headers)
        kind = SocketExchange if websocket else Exchange
        exchange = kind(self.idle_watch, worker, limits, scope, receive, send, request_id)
        try:
            if isinstance(exchange, SocketExchange):
                return await exchange.websocket(inner), worker
            return await exchange.http(inner, first), worker
        finally:
            exchange.close()
            pool.release(worker)

    @staticmethod
    def offer(
        worker: Worker, verify: bool, picked: dict[bytes, bytes], claims: dict[str, Any] | None
    ) -> Offer:
        """What lets `worker` serve this connection's next requests itself: the token serve verified."""
        limits = worker.function.limits
        exp = claims.get("exp") if claims is not None else None
        return Offer(
            worker,
            verify,
            token=_text(picked.get(b"authorization")) if claims is not None else None,
            claims=claims_header(claims) if claims is not None else b"",
            exp=float(exp) if isinstance(exp, int | float) else None,
            max_body=int(limits.max_body_mb * MB),
            idle_timeout=limits.request_idle_timeout_sec,
        )

    # -- helpers ---------------------------------------------------------------------------------------

    def log_request(
        self,
        scope: Scope,
        function: str | None,
        worker: Worker | None,
        request_id: str,
        status: int,
        started: float,
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        method, path = scope.get("method", "WEBSOCKET"), scope["path"]
        if scope["type"] == "websocket":
            method = "WEBSOCKET"
        worker_id = worker.id if worker else None
        self.emit(
            events.request(
                method, path, status, duration_ms, function=function, worker=worker_id, request=request_id
            )
        )
