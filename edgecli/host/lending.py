"""Serve's side of lent connections: lending a client's connection to a worker, and taking it back.

Once serve has answered a request of a keep-alive connection through a per_worker Python worker, the
relay's offer (`offer_lend`) lets `LendingProtocol` hand the connection to that worker when the response
is out: serve sends the worker a copy of the socket and stops reading it, keeping its own copy. The
worker serves the next requests itself and gives back what is not its to serve; the connection comes
back when its worker retires, drains or dies, and serve runs its HTTP protocol on it again, starting with
the bytes the worker read. A request in flight on a connection whose worker died is answered here, as
the exchange would (546 for a limit, 500 otherwise). See docs/architecture.md, "Lent connections".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from edgecli import events, ipc
from edgecli.answers import failure, whole_response
from edgecli.events import Event
from edgecli.host.worker import Lent, State, Worker
from edgecli.http_protocol import HttpProtocol
from edgecli.ipc import Kind

MAX_LENT = 64  # connections one worker holds: as many as it takes requests at once through serve
OFFER = "edgecli_lend_offer"  # set by the relay on a request's cycle
LENT_MODULE = "edgecli.runtime.lent"  # the worker's side


@dataclass(frozen=True, slots=True)
class Offer:
    """What the relay knows, once a request is routed, that lets its worker serve the next ones."""

    worker: Worker
    verify: bool  # the function's requests carry a JWT serve checks
    token: str | None  # the Authorization value serve verified, to be accepted as is
    claims: bytes  # the claims header serve made for it
    exp: float | None  # when the token stops being valid
    max_body: int  # bytes; 0: no bound
    idle_timeout: float


def offer_lend(receive: Any, offer: Offer) -> None:
    """Have the connection `receive` reads from lent to `offer.worker` once this response is out."""
    cycle = getattr(receive, "__self__", None)
    if isinstance(cycle, RequestResponseCycle):
        setattr(cycle, OFFER, offer)


class Lender:
    def __init__(self, make_protocol: Callable[[], HttpProtocol], emit: Callable[[Event], None]) -> None:
        self.make_protocol = make_protocol  # serve's own HTTP protocol, for a connection that comes back
        self.emit = emit
        self.closing = False  # serve is stopping: a connection that comes back is closed, not served
        self.workers: set[Worker] = set()  # the workers holding lent connections

    # -- lend ------------------------------------------------------------------------------------------

    def lend(self, protocol: HttpProtocol, offer: Offer) -> bool:
        """Lend the connection `protocol` runs on, if it is between two requests with nothing unsent."""
        worker = offer.worker
        transport = protocol.transport
        if (
            self.closing
            or worker.state is not State.READY
            or worker.lend_sock is None
            or len(worker.lent) >= MAX_LENT
            or not protocol.between_requests()
        ):
            return False
        protocol.flush_writes()  # the response, held for the end of the pass (batching.py)
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_write_buffer_size():
            return False
        channel = worker.conn.new_channel()
        message = {
            "channel": channel,
            "verify": offer.verify,
            "token": offer.token,
            "claims": offer.claims.decode("ascii"),
            "exp": offer.exp,
            "max_body": offer.max_body,
            "idle": offer.idle_timeout,
            "head_timeout": protocol.head_timeout,  # [edge_runtime] request_head_timeout_sec
        }
        fd = os.dup(sock.fileno())
        try:
            ipc.send_lend(worker.lend_sock, message, fd)
        except OSError:  # its lending socket is full or gone: serve keeps serving the connection
            os.close(fd)
            return False
        worker.lend(channel, Lent(fd))
        self.workers.add(worker)
        transport.close()  # serve's transport only: its copy of the socket keeps the connection open
        return True

    # -- what the worker says --------------------------------------------------------------------------

    def on_frame(self, worker: Worker, kind: int, channel: int, payload: bytes) -> None:
        lent = worker.lent.get(channel)
        if kind == Kind.LENT_ENDED:
            # Recorded even when the connection is no longer lent: given back as its last response
            # ended, or closed by its client while the handler ran on, LENT_ENDED comes after.
            if lent is not None and lent.request is not None:
                self.ended(worker, lent)
            status, duration_ms, busy = ipc.read_ended(payload)
            self.record(worker, busy, status, duration_ms)
            return
        if lent is None:
            return
        if kind == Kind.LENT_BUSY:
            if lent.request is None:
                worker.lent_busy += 1
            lent.request, lent.began, lent.started = payload, time.perf_counter(), False
        elif kind == Kind.LENT_STARTED:
            lent.started = True
        elif kind == Kind.RELEASED:
            if lent.request is not None:
                self.ended(worker, lent)
            worker.returned(channel)
            self.take_back(lent, payload)
        elif kind == Kind.LENT_CLOSED:
            if lent.request is not None:
                self.ended(worker, lent)
            worker.returned(channel)
            os.close(lent.fd)

    def record(self, worker: Worker, busy: bytes, status: int, duration_ms: float) -> None:
        """A lent request's `request` event, from its LENT_BUSY payload: made here, never in the worker,
        whether the request ended there (LENT_ENDED) or died with it (answer_lost)."""
        request_id, method, path = ipc.read_busy(busy)
        self.emit(events.request(method, path, status, duration_ms, **worker.context(request=request_id)))

    @staticmethod
    def ended(worker: Worker, lent: Lent) -> None:
        if worker.sole_request() is not None:
            # What the handler wrote to fd 1/2 came before its end, on a pipe of its own: read it while
            # the request is still the only one in flight (so the output is its), as on serve's path.
            for output in worker.outputs:
                output.read_now()
        lent.request = None
        worker.lent_busy -= 1

    def take_back(self, lent: Lent, held: bytes) -> None:
        """Serve's HTTP protocol runs on the connection again, starting with the bytes the worker read."""
        if self.closing:
            self.close(lent.fd)
            return
        sock = socket.socket(fileno=lent.fd)
        sock.setblocking(False)
        protocol = self.make_protocol()
        protocol.held_bytes = held
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, sock))
        task.add_done_callback(_retrieved)

    @staticmethod
    def close(fd: int) -> None:
        with contextlib.suppress(OSError):
            socket.socket(fileno=fd).close()

    # -- the worker's end ------------------------------------------------------------------------------

    def worker_gone(self, worker: Worker) -> None:
        """Its process is dead and its socket read to the end: every connection it still held comes back.
        A request in flight there is answered as the exchange answers one its worker lost."""
        self.workers.discard(worker)
        worker.lent_busy = 0
        for channel, lent in list(worker.lent.items()):
            worker.lent.pop(channel, None)
            if lent.request is None:
                self.take_back(lent, b"")
            else:
                self.answer_lost(worker, lent)

    def answer_lost(self, worker: Worker, lent: Lent) -> None:
        assert lent.request is not None
        request_id, _, _ = ipc.read_busy(lent.request)
        status = 500
        if not lent.started:  # else the response is incomplete, and closing the connection says so
            kill_reason, deadline = worker.why_failed()
            status, code, body = failure(True, kill_reason, deadline, request_id)
            with contextlib.suppress(OSError):
                os.write(lent.fd, whole_response(status, code, body, request_id))
        self.close(lent.fd)
        self.record(worker, lent.request, status, round((time.perf_counter() - lent.began) * 1000, 2))

    def stop_lending(self) -> None:
        """Serve is stopping: nothing more is lent, a connection that comes back is closed, and the
        workers end the responses in flight on their lent connections with `connection: close`."""
        self.closing = True
        for worker in self.workers:
            if worker.lent:
                worker.conn.recall(closing=True)

    def close_all(self) -> None:
        """Serve is done: whatever is still lent is closed (its workers are gone)."""
        self.closing = True
        for worker in list(self.workers):
            for lent in worker.lent.values():
                self.close(lent.fd)
            worker.lent.clear()
        self.workers.clear()


class LendingProtocol(HttpProtocol):
    """serve's HTTP protocol: once a response is out, its connection may be lent (the relay's offer)."""

    lender: Lender | None = None  # set by serve (`with_lender`)

    @classmethod
    def with_lender(cls, lender: Lender, head_timeout: float) -> type[LendingProtocol]:
        return type(cls.__name__, (cls,), {"lender": lender, "head_timeout": head_timeout})

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        offer = getattr(cycle, OFFER, None)
        if offer is not None and self.lender is not None and cycle is not None and cycle.keep_alive:
            self.lender.lend(self, offer)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
