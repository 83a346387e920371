"""In-process tests of the relay with a fake pool: routing, auth, error mapping, x-request-id."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgecli.config import DEFAULT_JWT_SECRET, FunctionConfig
from edgecli.events import Event
from edgecli.host.auth import Verifier, make_key
from edgecli.host.connection import LOST, BootError, ResponseStream
from edgecli.host.pool import NoWorkerAvailable
from edgecli.host.relay import Relay, new_request_id
from edgecli.host.worker import Worker


class FakeConn:
    """Plays a worker: answers every request with `script` (a list of stream items)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.opened: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    def open(self, scope_payload: bytes, first_body: bytes | None, more: bool) -> tuple[int, ResponseStream]:
        self.opened.append(json.loads(scope_payload))
        self.bodies.append(first_body or b"")
        stream = ResponseStream()
        for item in self.script:
            stream.put(item)
        return 1, stream

    async def send_body(self, channel: int, body: bytes, more: bool) -> None:
        self.bodies.append(body)

    def disconnect(self, channel: int, code: int | None = None) -> None:
        pass

    def consumed(self, channel: int, count: int) -> None:
        pass

    async def wait_for_credit(self, channel: int) -> None:
        pass

    def close_channel(self, channel: int) -> None:
        pass


def FakeWorker(conn: FakeConn, kill_reason: str | None = None) -> Worker:
    """A real worker handle over a fake connection."""
    function = FunctionConfig(name="hello", entrypoint=Path("x"), directory=Path("."))
    worker = Worker("w1", function, 0, conn, pool=None)  # type: ignore[arg-type]
    worker.kill_reason = kill_reason
    return worker


class FakePool:
    def __init__(self, worker: Worker | None = None, error: Exception | None = None, jwt: bool = True):
        self.worker = worker
        self.error = error
        self.function = FunctionConfig(
            name="hello", entrypoint=Path("x"), directory=Path("."), verify_jwt=jwt
        )
        self.released = 0

    async def acquire(self) -> Worker:
        if self.error is not None:
            raise self.error
        assert self.worker is not None
        return self.worker

    def release(self, worker: Worker) -> None:
        self.released += 1


OK = [("start", 200, [(b"content-type", b"text/plain")]), ("body", b"hel", True), ("body", b"lo", False)]
ANON = {"authorization": f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}"}


def call(
    pool: Any, method: str = "GET", path: str = "/functions/v1/hello", **kw: Any
) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    relay = Relay({"hello": pool}, Verifier(DEFAULT_JWT_SECRET), events.append)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=relay)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go()), events


def test_proxies_to_the_function_path_with_request_id() -> None:
    worker = FakeWorker(FakeConn(OK))
    pool = FakePool(worker)
    r, events = call(pool, "POST", "/functions/v1/hello/a/b?x=1", headers=ANON, content=b"payload")
    assert (r.status_code, r.text) == (200, "hello")
    assert "sb-error-code" not in r.headers
    scope = worker.conn.opened[0]
    # As under uvicorn mounted at /functions/v1: the full path, the client's raw path, the root path.
    assert scope["path"] == "/functions/v1/hello/a/b" and scope["query_string"] == "x=1"
    assert scope["raw_path"] == "/functions/v1/hello/a/b" and scope["root_path"] == "/functions/v1"
    assert r.headers["x-request-id"] == scope["request_id"]
    assert b"".join(worker.conn.bodies) == b"payload"
    assert pool.released == 1 and not worker.inflight
    (summary,) = events
    assert summary.kind == "request" and summary.fields["status"] == 200 and summary.function == "hello"
    # The verified claims reach the function as a header.
    claims = dict(scope["headers"])["x-edgecli-jwt-claims"]
    assert json.loads(claims)["role"] == "anon"


def test_new_request_ids_are_distinct_uuids_counted_in_their_first_digits() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    # The printed prefix (the first 8 hex digits) differs between any two requests.
    assert len({text[:8] for text in ids}) == len(ids)
    for before, after in itertools.pairwise(ids):
        assert (int(after[:8], 16) - int(before[:8], 16)) % 2**32 == 1
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert parsed.version == 8 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    # The rest is random: no two ids share it.
    assert len({text[9:] for text in ids}) == len(ids)


def test_client_request_id_is_echoed() -> None:
    r, _ = call(FakePool(FakeWorker(FakeConn(OK))), headers={**ANON, "x-request-id": "abc"})
    assert r.headers["x-request-id"] == "abc"


@pytest.mark.parametrize(
    "path", ["/functions/v1/nope", "/functions/v1/1x", "/functions/v1/_shared", "/other"]
)
def test_not_found(path: str) -> None:
    r, _ = call(FakePool(FakeWorker(FakeConn(OK))), path=path, headers=ANON)
    assert (r.status_code, r.text) == (404, "Function not found")
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("headers", "msg"),
    [
        ({}, "Error: Missing authorization header"),
        ({"authorization": "Basic abc"}, "Error: Auth header is not 'Bearer {token}'"),
        ({"authorization": "Bearer not.a.jwt"}, "Invalid JWT"),
    ],
)
def test_jwt_failures(headers: dict[str, str], msg: str) -> None:
    r, _ = call(FakePool(FakeWorker(FakeConn(OK))), headers=headers)
    assert r.status_code == 401 and r.json() == {"msg": msg}


def test_options_and_verify_jwt_false_skip_auth() -> None:
    assert call(FakePool(FakeWorker(FakeConn(OK))), "OPTIONS")[0].status_code == 200
    assert call(FakePool(FakeWorker(FakeConn(OK)), jwt=False))[0].status_code == 200


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(BootError("boom"), 503, "BOOT_ERROR"), (NoWorkerAvailable("hello"), 504, "WORKER_TIMEOUT")],
)
def test_pool_errors(error: Exception, status: int, code: str) -> None:
    r, events = call(FakePool(error=error), headers=ANON)
    assert r.status_code == status and r.json()["code"] == code
    assert r.headers["sb-error-code"] == code
    assert events[0].fields["status"] == status


def test_worker_failures_map_to_500_and_546() -> None:
    r, _ = call(FakePool(FakeWorker(FakeConn([("failed", "ValueError: secret")]))), headers=ANON)
    assert r.status_code == 500 and r.json()["code"] == r.headers["sb-error-code"] == "WORKER_ERROR"
    # The error's text stays in the logs; the body says where to look.
    request_id = r.headers["x-request-id"]
    assert "secret" not in r.text and f"edgecli logs --request {request_id}" in r.json()["message"]
    r, _ = call(FakePool(FakeWorker(FakeConn([LOST]))), headers=ANON)
    assert r.status_code == 500 and r.json()["code"] == "WORKER_ERROR"
    r, _ = call(FakePool(FakeWorker(FakeConn([LOST]), kill_reason="cpu")), headers=ANON)
    assert r.status_code == 546 and r.json()["code"] == r.headers["sb-error-code"] == "WORKER_LIMIT"
    assert "CPU" in r.json()["message"]
