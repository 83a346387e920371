"""One request a worker serves on a lent connection (edgecli/runtime/lent.py), as serve would have it
served: the scope the worker's channel would give, the request's id on its response, edgecli's own
answers (edgecli/answers.py) when the app fails or is late, and its end, which serve records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edgecli import ipc
from edgecli.answers import JSON, json_body, plain, worker_failed
from edgecli.idle_watch import IdleWatch
from edgecli.ipc import Kind
from edgecli.routing import CLAIMS, REQUEST_ID, ROOT_PATH, inbound
from edgecli.runtime import report
from edgecli.runtime.tasks import format_exception
from edgecli.runtime.tracebacks import UserMistake

HTTP_ASGI = {"version": "3.0", "spec_version": "2.3"}
CLIENT_CLOSED = 499


class Host(Protocol):
    """What lending and a lent request need of the worker (edgecli/runtime/worker.py)."""

    spec: Any  # .function, .worker
    app: Any
    lifespan: Any
    stopping: bool

    def write(self, frame: bytes) -> None: ...
    def flush(self) -> None: ...
    def background(self, coro: Any) -> None: ...


class Lends(Protocol):
    """What a lent request needs of the worker's lending (`Lending`, edgecli/runtime/lent.py)."""

    function: str
    worker: Host
    idle_timeout: float
    idle_watch: IdleWatch[LentRequest]

    def write(self, kind: Kind, channel: int, payload: bytes = b"") -> None: ...


class Connection(Protocol):
    """What a lent request needs of the connection it came on (`LentProtocol`, edgecli/runtime/lent.py)."""

    @property
    def lending(self) -> Lends: ...

    channel: int
    cycle: Any  # uvicorn's RequestResponseCycle
    transport: Any
    message_done: bool  # its body is all read
    request_id: str
    busy: bytes  # the request's LENT_BUSY payload
    claims: bytes

    def flush_writes(self) -> None: ...


class LentRequest:
    """One request a worker serves on a lent connection: its id, its status, and whether it was cut."""

    __slots__ = (
        "answer",
        "began",
        "busy",
        "cut",
        "cycle",
        "ended",
        "id",
        "protocol",
        "respond",
        "started",
        "status",
        "timeout",
    )

    def __init__(self, protocol: Connection, rid: str, respond: Any, timeout: float) -> None:
        self.protocol = protocol
        self.busy = protocol.busy
        self.began = time.perf_counter()
        self.cycle = protocol.cycle
        self.id = rid
        self.respond = respond  # uvicorn's send()
        self.timeout = timeout
        self.status = 500
        self.started = False
        self.cut = False  # edgecli answered for the app; what the app sends next goes nowhere
        self.answer: asyncio.Task[None] | None = None  # that answer, when the idle timeout made it
        self.ended = False

    def end(self) -> None:
        """The request's end, once: serve counts it ended, and records it, when this comes. When edgecli
        answered for the app, that is then, as through serve, though the app may run on."""
        if self.ended:
            return
        self.ended = True
        duration_ms = round((time.perf_counter() - self.began) * 1000, 2)
        payload = ipc.ended_payload(self.status, duration_ms, self.busy)
        self.protocol.lending.write(Kind.LENT_ENDED, self.protocol.channel, payload)

    async def send(self, message: Any) -> None:
        """Every response goes out here, the app's or edgecli's: serve hears that it started (a worker
        lost after that leaves an incomplete response, which serve must cut rather than answer)."""
        protocol = self.protocol
        if message["type"] == "http.response.start" and not self.started:
            self.started = True
            self.status = int(message["status"])
            protocol.lending.write(Kind.LENT_STARTED, protocol.channel)
        await self.respond(message)
        if message.get("more_body", False):
            # A streamed piece leaves now, as it does through serve, even if the handler does not yield
            # before its next one: serve hears that the response started before the client sees it.
            protocol.lending.worker.flush()
            protocol.flush_writes()

    def idle(self) -> None:
        if self.started or self.cut:
            return
        self.cut = True
        self.answer = asyncio.get_running_loop().create_task(self.answer_idle())

    async def answer_idle(self) -> None:
        """As the exchange answers: 408 if the client stalled its body, else 504; then the app's receive()
        says http.disconnect, as the worker's channel does once serve has answered."""
        if self.protocol.message_done:
            message = f"The function did not start a response within {self.timeout:g} s"
            body = json_body("IDLE_TIMEOUT", message)
            await plain({"type": "http"}, self.send, 504, body, self.id, JSON, "IDLE_TIMEOUT")
        else:
            body = json_body("REQUEST_TIMEOUT", "The client stopped sending the request body")
            await plain({"type": "http"}, self.send, 408, body, self.id, JSON, "REQUEST_TIMEOUT", close=True)
        self.end()
        if self.cycle is not None:
            self.cycle.message_event.set()


async def serve_request(protocol: Connection, scope: Any, receive: Any, send: Any) -> None:
    """One request on a lent connection, as the relay and the worker's channel would serve it."""
    lending = protocol.lending
    worker = lending.worker
    cycle = protocol.cycle
    headers, _ = inbound(scope["headers"])
    request_id = protocol.request_id
    if protocol.claims:
        headers.append((CLAIMS, protocol.claims))
    method, path = scope["method"], scope["path"]
    inner = {  # the keys and types a scope sent over the worker socket has (ipc.decode_scope)
        "type": "http",
        "asgi": HTTP_ASGI,
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "path": path,
        "raw_path": scope["raw_path"],
        "root_path": ROOT_PATH,
        "query_string": scope["query_string"],
        "headers": headers,
        "client": scope["client"],
        "server": scope["server"],
        "state": dict(worker.lifespan.state) if worker.lifespan is not None else {},
        "method": method,
    }
    request = LentRequest(protocol, request_id, send, lending.idle_timeout)
    if request.timeout:
        lending.idle_watch.add(request, request.timeout)
    token = report.current_request.set(request_id)
    try:
        await _run_app(worker, request, inner, receive, _app_send(request))
    finally:
        report.current_request.reset(token)
        lending.idle_watch.remove(request)
        if cycle is not None and cycle.disconnected and not cycle.response_complete:
            request.status = CLIENT_CLOSED
        request.end()


def _app_send(request: LentRequest) -> Callable[[Any], Awaitable[None]]:
    """The app's send(): the response gets the request's id; nothing goes out once edgecli answered."""
    rid = request.id.encode("latin-1")

    async def app_send(message: Any) -> None:
        if request.cut:
            return
        if message["type"] == "http.response.start" and not request.started:
            headers = [(k, v) for k, v in message.get("headers") or () if k.lower() != REQUEST_ID]
            headers.append((REQUEST_ID, rid))
            message = {**message, "headers": headers}
        await request.send(message)

    return app_send


async def _run_app(worker: Host, request: LentRequest, scope: Any, receive: Any, send: Any) -> None:
    """The user's app, its failures answered as serve answers them (edgecli/answers.py)."""
    assert worker.app is not None
    message: str | None = None
    try:
        await worker.app(scope, receive, send)
        if not request.started and not request.cut:
            report.reporter.log("The app finished without sending a response", "error")
            message = "the app finished without sending a response"
    except asyncio.CancelledError:
        message = "the worker stopped before the response was complete"
    except UserMistake as exc:  # its message says what to change; a traceback would only blur it
        report.reporter.log(str(exc), "error")
        message = str(exc)
    except Exception as exc:
        report.reporter.log(f"Uncaught exception in handler:\n{format_exception(exc)}", "error")
        message = f"{type(exc).__name__}: {exc}"
    if request.answer is not None:
        await request.answer  # inside the request's task, so that uvicorn sees its response begun
    if message is None or request.cut:
        return
    if request.started:
        request.protocol.transport.close()  # the body is incomplete: the client must see it cut
        return
    request.cut = True
    deadline = "shutdown" if worker.stopping else None
    request.status = await worker_failed(False, None, deadline, {"type": "http"}, request.send, request.id)
