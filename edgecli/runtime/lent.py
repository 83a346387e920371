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
from email.utils import formatdate
from enum import Enum
from typing import Any

import httptools
import uvicorn
from uvicorn.server import ServerState

from edgecli import ipc
from edgecli.answers import new_request_id
from edgecli.http_protocol import HttpProtocol
from edgecli.idle_watch import IdleWatch
from edgecli.ipc import Kind
from edgecli.routing import REQUEST_ID, ROOT_PATH
from edgecli.runtime.lent_request import Host, LentRequest, serve_request

TOKENS = 256  # verified tokens a worker keeps; more, and it starts again from the ones serve sends
FLUSH_GRACE = 5.0  # s a leaving worker gives the connections it gave back to send what it wrote them


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

    def recall(self, closing: bool = False) -> None:
        """Serve wants its connections back: the idle ones go now, the others once their response ends;
        `closing` (serve stops): those others end with it, as uvicorn ends its own when it stops."""
        self.recalled = True
        for protocol in list(self.connections.values()):
            if closing and protocol.cycle is not None and not protocol.cycle.response_complete:
                protocol.cycle.keep_alive = False
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


class Phase(Enum):
    """Where a lent connection is, for the worker holding it."""

    BETWEEN = "between"  # no request of the worker's on it: each byte read is held, to go back whole
    TORN = "torn"  # between, but the next request began in a read that was not held: it cannot go back
    SERVING = "serving"  # a request the worker serves: its head accepted, its body or response to come
    GIVING_BACK = "giving back"  # the parser stopped at a request that is serve's
    ENDING = "ending"  # the connection ends once the response in flight is out (pipelining, torn)
    RELEASED = "released"  # serve's again, or closed


class LentProtocol(HttpProtocol):
    """serve's HTTP protocol on a lent connection: it serves what is this worker's, gives back the rest.

    Between two requests (the last one's body read and its response sent) every byte read is held, so
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
        self.phase = Phase.BETWEEN
        self.held: list[bytes] = []  # read since the last request ended
        self.waiting: list[bytes] = []  # read while a response was still going out: see data_received
        self.message_done = True  # the parser has all of the current request, its body included
        self.claims = b""
        self.request_id = ""
        self.busy = b""
        self.request_task: asyncio.Task[Any] | None = None
        # Where a request that begins in the read the last one ended in begins (see _request_end): the
        # bytes handed to the parser so far, where the next request begins (None: not known), and the
        # served request's start and the reads its head came in.
        self.fed = 0
        self.boundary: int | None = 0
        self.request_start: int | None = None
        self.request_reads: list[bytes] = []
        self._data = b""  # the read being parsed
        self._feeding = False  # a read is being parsed...
        self._feed_held = False  # ...that is held (it began between two requests)
        self._ended_in_feed = False  # ...and a request ended inside it
        self.closed: asyncio.Future[None] = self.loop.create_future()  # connection_lost was called

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.lending.connections[self.channel] = self
        if self.lending.recalled:
            self.release_if_idle()

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.RELEASED:
            return
        if self.waiting or self._response_out():
            # The next request, sent before this response ended (pipelining): it waits, unparsed, until
            # the response is out, and is then read as any request between two, so that it can still
            # go back whole. uvicorn would parse it and queue it; one request at a time keeps serve's
            # account of the connection (one request in flight) true.
            self.waiting.append(data)
            self.transport.pause_reading()
            return
        self._feed_held = self.phase is Phase.BETWEEN or self.phase is Phase.TORN
        if self._feed_held:
            self.held.append(data)
        self._feeding = True
        self.fed += len(data)
        self._data = data
        super().data_received(data)
        self._feeding = self._ended_in_feed = False
        self._data = b""
        if self.lending.recalled:  # not from inside the parser, which goes on with what it was fed
            self.release_if_idle()

    # -- the parser's callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            rest = self._rest_of_read()
            if not rest:
                self.phase = Phase.ENDING
            else:  # it waits, as one sent in a write of its own does; the parser stops at it
                self.fed -= len(rest)
                self.waiting.append(rest)
            raise Pipelined
        if self._ended_in_feed and not self._feed_held:
            self.phase = Phase.TORN
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
            self.phase = Phase.GIVING_BACK if self.phase is Phase.BETWEEN else Phase.ENDING
            raise GiveBack
        self.request_start = self.boundary if self.phase is Phase.BETWEEN else None
        self.request_reads = self.held
        self.phase = Phase.SERVING
        self.held = []
        self.claims = claims
        # Serve hears of the request before the handler runs: a handler that kills its worker in its
        # first step (a busy loop under a CPU limit, os._exit) must still get its answer from serve. The
        # frame's write is due at the end of this pass, before the handler's task first runs.
        self.request_id = next((v for k, v in self.headers if k == REQUEST_ID), b"").decode("latin-1")
        self.request_id = self.request_id or new_request_id()
        method = self.parser.get_method().decode("ascii")
        self.busy = ipc.busy_payload(self.request_id, method, self.url)
        lending.write(Kind.LENT_BUSY, self.channel, self.busy)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.message_done = True
        super().on_message_complete()
        self._at_boundary()

    def send_400_response(self, msg: str) -> None:
        if self.phase is Phase.GIVING_BACK:
            self.give_back()
        elif self.phase is Phase.ENDING:
            self.end()
        elif self.waiting and self.phase is Phase.SERVING:
            # The parser stopped at a pipelined request (on_message_begin), kept in `waiting`.
            self.new_parser()
            self.transport.pause_reading()
        else:
            super().send_400_response(msg)

    def new_parser(self) -> None:
        """A parser for what follows the request the last one stopped at (a stopped parser stays so), made
        as uvicorn's protocol makes its own."""
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

    def _request_end(self) -> int | None:
        """Where the served request ends, in bytes handed to the parser; None when that is not known. It
        began at `request_start`; its head ends at the first blank line after the empty lines the parser
        skips before a request line, and its body is `content-length` bytes: a lent request has no other
        framing."""
        if self.request_start is None:
            return None
        head = b"".join(self.request_reads)
        begins = len(head) - len(head.lstrip(b"\r\n"))
        head_end = head.find(b"\r\n\r\n", begins)
        length = next((value for key, value in self.headers if key == b"content-length"), b"0")
        if head_end < 0 or not length.isdigit():
            return None
        return self.request_start + head_end + 4 + int(length)

    def _rest_of_read(self) -> bytes | None:
        """What the read being parsed holds after the served request's end (the next request's first
        bytes); None when where that end is is not known."""
        end = self._request_end()
        offset = None if end is None else end - (self.fed - len(self._data))
        if offset is None or not 0 <= offset <= len(self._data):
            return None
        return self._data[offset:]

    # -- between requests ------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.phase is Phase.ENDING:
            self.transport.close()
        else:
            self._at_boundary()

    def _at_boundary(self) -> None:
        cycle = self.cycle
        if self.phase is Phase.SERVING and self.message_done and (cycle is None or cycle.response_complete):
            self.phase = Phase.BETWEEN
            self._ended_in_feed = self._feeding
            self.boundary = self.fed
            if self._feeding:  # its body ended inside this read, after its answer: see _hold_rest
                self._hold_rest()
            if self.lending.recalled and not self._feeding:
                self.release_if_idle()
            elif self.waiting:
                self.loop.call_soon(self._read_waiting)  # not from inside the response's send()

    def _hold_rest(self) -> None:
        """The served request's body ended inside the read being parsed (its handler answered without
        reading it all): what follows in the read is the next request's, and is held from here on, so
        that the request can still go back whole. Where the end is not known, the next request that
        begins in this read cannot go back (TORN)."""
        rest = self._rest_of_read()
        if rest is None:
            self.boundary = None
            return
        self.boundary = self.fed - len(rest)
        self.held = [rest] if rest else []
        self._feed_held = True

    def _response_out(self) -> bool:
        """A response is going out for a request read whole: what is read now is the next request's."""
        cycle = self.cycle
        return (
            self.phase is Phase.SERVING
            and self.message_done
            and cycle is not None
            and not cycle.response_complete
        )

    def _read_waiting(self) -> None:
        if self.phase is not Phase.BETWEEN or not self.waiting:
            return  # given back (with it) or ended meanwhile
        data = b"".join(self.waiting)
        self.waiting.clear()
        self.transport.resume_reading()
        self.data_received(data)

    def release_if_idle(self) -> None:
        """Serve wants the connection back: it goes now if no request of the worker's is on it."""
        if self.phase is Phase.BETWEEN and not self.transport.is_closing():
            self.give_back()
        elif self.phase is Phase.TORN:
            self.end()

    def end(self) -> None:
        """The connection cannot go back to serve: it ends, once the response in flight is out."""
        self.phase = Phase.ENDING
        self.transport.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def give_back(self) -> None:
        """The connection is serve's again, with what was read of its next request. close() sends what
        is still unsent first; serve writes nothing before the client has read it and asked again."""
        self.phase = Phase.RELEASED
        self.transport.pause_reading()
        self.lending.connections.pop(self.channel, None)
        self.lending.leaving.add(self)
        self.lending.write(Kind.RELEASED, self.channel, b"".join(self.held + self.waiting))
        self.transport.close()  # serve holds its own copy of the socket: the connection stays open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lending.leaving.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.phase is not Phase.RELEASED:
            self.phase = Phase.RELEASED
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
