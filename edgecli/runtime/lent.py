"""Client connections serve lends this worker: the worker answers their requests itself, serve off the path.

After serve has answered a request of a keep-alive connection through this worker, it may lend the
worker the connection (the socket's fd, over the worker's lending socket). The worker then runs the
same HTTP protocol serve runs (edgecli/http_protocol.py) on it, and serves each next request whose head
shows it is one serve would have sent here with nothing more to check: this function's path, a plain
body within `max_body_mb`, a token serve has verified. Anything else, and every request once serve
recalls its connections, goes back to serve with the bytes read of it (RELEASED). What the function sees
and what the client gets are what they are through serve. See docs/architecture.md, "Lent connections".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Protocol

import uvicorn
from uvicorn.server import ServerState

from edgecli import events, ipc
from edgecli.answers import JSON, json_body, new_request_id, plain, worker_failed
from edgecli.http_protocol import HttpProtocol
from edgecli.idle_watch import IdleWatch
from edgecli.ipc import Kind
from edgecli.routing import CLAIMS, REQUEST_ID, ROOT_PATH, inbound
from edgecli.runtime import report
from edgecli.runtime.tasks import format_exception
from edgecli.runtime.tracebacks import UserMistake

HTTP_ASGI = {"version": "3.0", "spec_version": "2.3"}
TOKENS = 256  # verified tokens a worker keeps; more, and it starts again from the ones serve sends
FLUSH_GRACE = 5.0  # s a leaving worker gives the connections it gave back to send what it wrote them
CLIENT_CLOSED = 499


class Host(Protocol):
    """What lending needs of the worker (edgecli/runtime/worker.py)."""

    spec: Any  # .function, .worker
    app: Any
    lifespan: Any
    stopping: bool

    def write(self, frame: bytes) -> None: ...
    def flush(self) -> None: ...
    def background(self, coro: Any) -> None: ...


class GiveBack(Exception):
    """Raised in a parser callback: this request is serve's. The parser stops where it is."""


class Pipelined(Exception):
    """Raised in a parser callback: a request began before the last one's response ended."""


class Lending:
    """This worker's lent connections, and what serve said about serving them."""

    def __init__(self, worker: Host, sock: socket.socket) -> None:
        self.worker = worker
        self.sock = sock
        self.function = worker.spec.function
        self.prefix = f"{ROOT_PATH}/{self.function}".encode()
        self.verify = True
        self.max_body = 0  # bytes; 0: no bound
        self.idle_timeout = 0.0
        self.head_timeout = 0.0
        self.tokens: dict[bytes, tuple[bytes, float | None]] = {}  # Authorization -> (claims header, exp)
        self.connections: dict[int, LentProtocol] = {}
        self.running: set[asyncio.Task[Any]] = set()  # handlers of lent requests, given back or not
        self.leaving: set[LentProtocol] = set()  # given back, still sending what the worker wrote
        self.recalled = False
        self.idle_watch: IdleWatch[LentRequest] = IdleWatch()
        # What uvicorn's protocol is built from, as serve's: the headers it adds, no logging of its own
        # (its warnings are serve's to print, not the function's log).
        self.config = uvicorn.Config(
            _unused_app,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=True,
            date_header=True,
        )
        self.config.load()
        self.server_state = ServerState()
        self._headers_timer: asyncio.TimerHandle | None = None
        self.update_headers()

    def update_headers(self) -> None:
        """`date` and `server` on every response, as uvicorn's server loop keeps them (once a second)."""
        date = formatdate(time.time(), usegmt=True).encode()
        self.server_state.default_headers = [(b"date", date), *self.config.encoded_headers]
        self._headers_timer = asyncio.get_running_loop().call_later(1.0, self.update_headers)

    def start(self) -> None:
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    # -- serve -> worker -------------------------------------------------------------------------------

    def _readable(self) -> None:
        while True:
            try:
                payload, fd = ipc.receive_lend(self.sock)
            except BlockingIOError:
                return
            except OSError:
                payload, fd = b"", None
            if not payload:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
                return
            lend = ipc.loads(payload)
            if fd is None:  # the fd did not come (this process is out of descriptors): serve keeps it
                self.write(Kind.RELEASED, int(lend["channel"]))
            else:
                self.adopt(lend, fd)

    def adopt(self, lend: dict[str, Any], fd: int) -> None:
        channel = int(lend["channel"])
        self.verify = bool(lend["verify"])
        self.max_body = int(lend["max_body"])
        self.idle_timeout = float(lend["idle"])
        self.head_timeout = float(lend["head_timeout"])
        if lend.get("token"):
            if len(self.tokens) >= TOKENS:
                self.tokens.clear()
            self.tokens[lend["token"].encode("latin-1")] = (lend["claims"].encode("ascii"), lend["exp"])
        sock = socket.socket(fileno=fd)
        if self.recalled:
            self.write(Kind.RELEASED, channel)
            sock.close()  # serve holds its own copy: the connection stays open
            return
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self.worker.background(loop.connect_accepted_socket(lambda: LentProtocol(self, channel), sock))

    def recall(self) -> None:
        """Serve wants its connections back: the idle ones go now, the others once their response ends."""
        self.recalled = True
        for protocol in list(self.connections.values()):
            protocol.release_if_idle()

    # -- what a request may be -------------------------------------------------------------------------

    def claims_for(self, method: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The claims header for a request this worker may serve (b"" when none is due); None when the
        request is serve's: another kind of request than a plain one, a body too large, a token unknown."""
        authorization = None
        for key, value in headers:
            if key == b"authorization":
                if authorization is None:
                    authorization = value
            elif not self.plain_header(key, value):
                return None
        if not self.verify or method == b"OPTIONS":
            return b""
        entry = self.tokens.get(authorization) if authorization is not None else None
        if entry is None:
            return None
        claims, exp = entry
        if exp is not None and exp <= time.time():
            del self.tokens[authorization]  # type: ignore[arg-type]
            return None
        return claims

    def plain_header(self, key: bytes, value: bytes) -> bool:
        """False for a header only serve handles: an upgrade, a chunked body, 100-continue, a body over
        max_body_mb (serve answers 413)."""
        if key in (b"upgrade", b"transfer-encoding"):
            return False
        if key == b"expect":
            return value.lower() != b"100-continue"
        if key == b"content-length" and self.max_body:
            return value.isdigit() and int(value) <= self.max_body
        return True

    def is_ours(self, url: bytes) -> bool:
        prefix = self.prefix
        if not url.startswith(prefix):
            return False
        rest = url[len(prefix) : len(prefix) + 1]
        return rest in (b"", b"/", b"?")

    # -- worker -> serve -------------------------------------------------------------------------------

    def write(self, kind: Kind, channel: int, payload: bytes = b"") -> None:
        self.worker.write(ipc.pack(kind, channel, payload))

    def busy(self) -> list[asyncio.Task[Any]]:
        """The handlers of lent requests still running, for a drain to wait on (a handler may run on
        after its response, its connection given back)."""
        return list(self.running)

    async def flushed(self, timeout: float = FLUSH_GRACE) -> None:
        """Wait until the connections given back have sent what this worker wrote them: close() sends
        it first, but not if the process exits under it (the tail of a large response)."""
        pending = [protocol.closed for protocol in self.leaving]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


class LentRequest:
    """One request a worker serves on a lent connection: its id, its status, and whether it was cut."""

    __slots__ = (
        "answer",
        "began",
        "cut",
        "cycle",
        "ended",
        "id",
        "method",
        "path",
        "protocol",
        "respond",
        "started",
        "status",
        "timeout",
    )

    def __init__(self, protocol: LentProtocol, rid: str, scope: Any, respond: Any, timeout: float) -> None:
        self.protocol = protocol
        self.method: str = scope["method"]
        self.path: str = scope["path"]
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
        """The request's record, once: serve counts the request ended when it comes. When edgecli
        answered for the app, that is then, as through serve, though the app may run on."""
        if self.ended:
            return
        self.ended = True
        lending = self.protocol.lending
        duration_ms = round((time.perf_counter() - self.began) * 1000, 2)
        event = events.request(
            self.method,
            self.path,
            self.status,
            duration_ms,
            function=lending.function,
            worker=lending.worker.spec.worker,
            request=self.id,
        )
        lending.worker.write(ipc.pack(Kind.EVENT, self.protocol.channel, event.to_row_json()))

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


class LentProtocol(HttpProtocol):
    """serve's HTTP protocol on a lent connection: it serves what is this worker's, gives back the rest.

    Between two requests (the last one's body read and its response sent) every byte read is kept, so
    that a request found to be serve's goes back whole; once a request is this worker's, nothing is.
    """

    def __init__(self, lending: Lending, channel: int) -> None:
        super().__init__(config=lending.config, server_state=lending.server_state, app_state={})
        self.head_timeout = lending.head_timeout  # serve's bound, before connection_made arms it
        self.held_bytes = b""  # it comes between two requests: the keep-alive timeout runs
        self.logger = QUIET
        self.app = self.run_request
        self.lending = lending
        self.channel = channel
        self.held: list[bytes] | None = []  # read since the last request ended; None while one runs
        self.message_done = True
        self.stopped: str | None = None  # why the parser was stopped: "give back" | "pipelined"
        self.claims = b""
        self.request_id = ""
        self.request_task: asyncio.Task[Any] | None = None
        self.released = False
        # A read that a request's end fell in the middle of, before a next request began in it: what
        # followed that end was not held, so that request cannot go back whole.
        self.held_whole = True
        self._read_unheld = False  # the read being parsed began inside a request (nothing of it held)
        self._ended_in_read = False  # and a request ended inside it
        self.closed: asyncio.Future[None] = self.loop.create_future()  # connection_lost was called

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.lending.connections[self.channel] = self
        if self.lending.recalled:
            self.release_if_idle()

    def data_received(self, data: bytes) -> None:
        if self.released:
            return
        if self.held is not None:
            self.held.append(data)
        self._read_unheld = self.held is None
        super().data_received(data)
        self._read_unheld = self._ended_in_read = False

    # -- the parser's callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.stopped = "pipelined"
            raise Pipelined
        if self._ended_in_read:
            self.held_whole = False
        self.message_done = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        lending = self.lending
        claims = None
        # While the last request's handler still runs (its response out, a background task after it),
        # serve serves the next one alongside it, as uvicorn would: one request at a time here.
        if self.request_task is None and not lending.recalled and lending.is_ours(self.url):
            claims = lending.claims_for(self.parser.get_method(), self.headers)
        if claims is None:
            self.stopped = "give back"
            raise GiveBack
        self.claims = claims
        self.held = None
        # Serve hears of the request before the handler runs: a handler that kills its worker in its
        # first step (a busy loop under a CPU limit, os._exit) must still get its answer from serve. The
        # frame's write is due at the end of this pass, before the handler's task first runs.
        self.request_id = next((v for k, v in self.headers if k == REQUEST_ID), b"").decode("latin-1")
        self.request_id = self.request_id or new_request_id()
        method = self.parser.get_method().decode("ascii")
        lending.write(Kind.LENT_BUSY, self.channel, ipc.busy_payload(self.request_id, method, self.url))
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.message_done = True
        super().on_message_complete()
        self._at_boundary()

    def send_400_response(self, msg: str) -> None:
        if self.stopped == "give back":
            self.give_back()
        elif self.stopped == "pipelined":
            self.transport.pause_reading()  # the response in flight ends, then the connection
        else:
            super().send_400_response(msg)

    # -- between requests ------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.stopped == "pipelined":
            self.transport.close()
            return
        self._at_boundary()

    def _at_boundary(self) -> None:
        cycle = self.cycle
        if self.held is None and self.message_done and (cycle is None or cycle.response_complete):
            self.held = []
            self.held_whole = True
            self._ended_in_read = self._read_unheld
            if self.lending.recalled:
                self.release_if_idle()

    def release_if_idle(self) -> None:
        if self.held is not None and not self.released and not self.transport.is_closing():
            self.give_back()

    def give_back(self) -> None:
        """The connection is serve's again, with what was read of its next request. close() sends what
        is still unsent first; serve writes nothing before the client has read it and asked again."""
        self.transport.pause_reading()
        if not self.held_whole:  # serve could not tell where the request starts: the connection ends
            self.transport.close()
            return
        self.released = True
        self.lending.connections.pop(self.channel, None)
        self.lending.leaving.add(self)
        self.lending.write(Kind.RELEASED, self.channel, b"".join(self.held or ()))
        self.transport.close()  # serve holds its own copy of the socket: the connection stays open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lending.leaving.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.released:
            self.released = True
            self.lending.connections.pop(self.channel, None)
            self.lending.write(Kind.LENT_CLOSED, self.channel)

    async def run_request(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app uvicorn's cycle runs: one lent request, its task known to the drain."""
        task = asyncio.current_task()
        assert task is not None
        self.request_task = task
        self.lending.running.add(task)
        try:
            await serve_request(self, scope, receive, send)
        finally:
            self.request_task = None
            self.lending.running.discard(task)


QUIET = logging.getLogger("edgecli.lent.uvicorn")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


async def _unused_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise AssertionError("a lent connection's protocol serves its own app")


async def serve_request(protocol: LentProtocol, scope: Any, receive: Any, send: Any) -> None:
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
    request = LentRequest(protocol, request_id, scope, send, lending.idle_timeout)
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
