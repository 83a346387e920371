"""A worker as a handle: its state, the verbs that move it along, its request streams, its exit record.

States, in order (a worker never goes back):

    booting ──> ready ──> retiring ──> draining ──> gone
       └──────────┴─────────┴──> (killed: any state straight to gone once the process is dead)

- booting: importing the function; holds no request.
- ready: takes requests (its pool hands it out).
- retiring: takes no new request; the ones in flight run to their own end (or the hard limits).
- draining: told to stop (STOP): background tasks get `grace` seconds, then the worker leaves.
- gone: the process is dead and its socket read to the end; `exit` says why, with what it used.

The relay says when a request opens and closes (`opened`, `closed`); the supervisor drives the rest. See
docs/architecture.md, "Workers".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from edgecli import ipc
from edgecli.config import FunctionConfig, Limits
from edgecli.events import Context, Event
from edgecli.host.connection import ResponseStream, WorkerConnection
from edgecli.host.output import PipeLines
from edgecli.host.usage import TreeUsage, descendants

KILL_MARGIN = 2.0  # seconds past a drain deadline before a worker that did not leave is killed
LIMIT_REASONS = ("wall_clock", "cpu", "memory")
# How serve closes a WebSocket still open at its worker's deadline (edgecli/host/websocket.py).
RESTART = 1012  # serve stops, or the function was reloaded: the client may reconnect to the new code
GOING_AWAY = 1001  # the worker retired for its own reasons


class State(Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"
    DRAINING = "draining"
    GONE = "gone"


class PoolHooks(Protocol):
    def on_retired(self, worker: Worker) -> None: ...
    def on_gone(self, worker: Worker) -> None: ...


class Lent:
    """One connection lent to a worker: serve's copy of the socket, and the request the worker has in
    flight on it, if one (what serve needs to answer it should the worker die)."""

    __slots__ = ("began", "fd", "request", "started")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.request: bytes | None = None  # LENT_BUSY's payload (ipc.read_busy), read only if needed
        self.began = 0.0
        self.started = False

    @property
    def request_id(self) -> str:
        """The id of the request in flight (`request` is set)."""
        assert self.request is not None
        return ipc.read_busy(self.request)[0]


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """Why a worker went, how it ended, and what it used (CPU since boot, peak-sampled memory)."""

    reason: str
    code: int | None
    cpu_ms: float
    memory_mb: float


class Worker:
    def __init__(
        self, id: str, function: FunctionConfig, generation: int, conn: WorkerConnection, pool: PoolHooks
    ) -> None:
        self.id = id
        self.function = function
        self.generation = generation
        self.conn = conn
        self.pool = pool
        self.spawned_at = time.monotonic()
        self.state = State.BOOTING
        self.pid: int | None = None
        self.cpu_base_ms = 0.0  # the tree's CPU time at the end of boot
        self.cpu_ms = 0.0  # the tree's CPU time, last sampled
        self.memory_mb = 0.0
        self.inflight: dict[int, str] = {}  # channel -> request id
        self.sockets: dict[int, Callable[[int], None]] = {}  # WebSocket channel -> how to close it
        self.lend_sock: socket.socket | None = None  # where serve lends it connections (host/lending.py)
        self.lent: dict[int, Lent] = {}  # channel -> a client connection lent to it
        self.lent_busy = 0  # of those, the ones with a request in flight
        self._socket_deadline: asyncio.TimerHandle | None = None
        self.tasks: dict[str, Event] = {}  # task id -> its task_start
        self.cancelled_tasks = 0
        self.noticed = False
        self.unload_reason: str | None = None
        self.kill_reason: str | None = None
        self.deadline: str | None = None  # "shutdown" once told to stop within a deadline
        self.exit_code: int | None = None
        self.exit: ExitRecord | None = None
        self.outputs: list[PipeLines] = []
        self._pending_stop: tuple[float, str] | None = None  # (grace, reason) once the requests are done
        self._kill_timer: asyncio.TimerHandle | None = None
        self._dead = asyncio.Event()
        self._code_known = asyncio.Event()
        self._socket_closed = asyncio.Event()
        self._pidfd: int | None = None
        self.usage: TreeUsage | None = None  # from the moment the pid is known

    @property
    def limits(self) -> Limits:
        return self.function.limits

    @property
    def live(self) -> bool:
        return self.state is not State.GONE

    @property
    def load(self) -> int:
        return len(self.inflight) + self.lent_busy

    @property
    def idle(self) -> bool:
        return not self.inflight and not self.tasks

    def context(self, *, request: str | None = None, task: str | None = None) -> Context:
        """Who an event serve makes about this worker is about (for the constructors of events.py)."""
        return {"function": self.function.name, "worker": self.id, "request": request, "task": task}

    def sole_request(self) -> str | None:
        """The request raw fd output most likely belongs to: the only one in flight, if exactly one."""
        if len(self.inflight) + self.lent_busy != 1:
            return None
        if self.inflight:
            return next(iter(self.inflight.values()))
        return next((lent.request_id for lent in self.lent.values() if lent.request is not None), None)

    # -- the relay's side (edgecli/host/exchange.py) ----------------------------------------------------

    def open_request(
        self, payload: bytes, first_body: bytes | None, more: bool, request_id: str
    ) -> tuple[int, ResponseStream]:
        """Send a request on a channel of its own: the channel, and the stream its answers arrive on.
        It counts as in flight from here, so the channel and the count cannot disagree."""
        channel, stream = self.conn.open(payload, first_body, more)
        self.opened(channel, request_id)
        return channel, stream

    def close_request(self, channel: int) -> None:
        """The exchange on `channel` is over, however it ended: the channel is freed, and the slot."""
        self.conn.close_channel(channel)
        self.closed(channel)

    def why_failed(self) -> tuple[str | None, str | None]:
        """What to tell a client whose request this worker lost or failed: why serve killed it (a
        limit's name, say) and the drain deadline it was under ("shutdown"); None for what did not."""
        return self.kill_reason, self.deadline

    def opened(self, channel: int, request_id: str, close: Callable[[int], None] | None = None) -> None:
        """A request is in flight on `channel`; `close(code)`, for a WebSocket, closes it at a deadline."""
        self.inflight[channel] = request_id
        if close is not None:
            self.sockets[channel] = close

    def closed(self, channel: int) -> None:
        """The request on `channel` is done: a retiring worker with none left is told to drain."""
        self.inflight.pop(channel, None)
        self.sockets.pop(channel, None)
        self._stop_if_done()

    def lend(self, channel: int, lent: Lent) -> None:
        """A client connection is lent to it (host/lending.py): until it comes back, the worker answers
        that connection's requests itself, and a retiring worker is not told to drain."""
        self.lent[channel] = lent

    def returned(self, channel: int) -> Lent | None:
        """The connection lent on `channel` is back, or ended."""
        lent = self.lent.pop(channel, None)
        self._stop_if_done()
        return lent

    def _stop_if_done(self) -> None:
        if self._pending_stop is not None and not self.inflight and not self.lent:
            self._send_stop(*self._pending_stop)

    # -- verbs -----------------------------------------------------------------------------------------

    def booted(self, cpu_ms: float) -> None:
        self.cpu_base_ms = cpu_ms
        if self.state is State.BOOTING:
            self.state = State.READY

    def retire(self, grace: float, reason: str, socket_code: int = GOING_AWAY) -> bool:
        """Take no new requests; once those in flight are done, drain for `grace` s and leave with
        `reason`. Open WebSockets, which have no end of their own, get `grace` s too, then are closed
        with `socket_code`. False when the worker was already on its way out."""
        if self.state not in (State.BOOTING, State.READY):
            return False
        self._stop_taking_requests()
        self._pending_stop = (grace, reason)
        if not self.inflight and not self.lent:
            self._send_stop(grace, reason)
        else:
            self._close_sockets_after(grace, socket_code)
        return True

    def drain(self, grace: float, deadline: str | None = None) -> None:
        """Stop now: requests and tasks get `grace` s (0: none), then beforeunload(termination).
        `deadline` names what imposes it ("shutdown"), for the requests it cuts."""
        if self.state is State.GONE:
            return
        if self.state is State.BOOTING:
            # Still importing (perhaps stuck there): it holds nothing, and cannot read a STOP until the
            # import ends. Nothing to drain: stop it now.
            self.kill("termination")
            return
        self.deadline = deadline
        self._stop_taking_requests()
        self._close_sockets_after(grace, RESTART)
        self._send_stop(grace, "termination")

    def notice(self, reason: str) -> None:
        """beforeunload(reason), once: a limit is near."""
        if not self.noticed:
            self.noticed = True
            self.conn.notice(reason)

    def kill(self, reason: str) -> None:
        if self.state is State.GONE or self.pid is None:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        self._stop_taking_requests()
        for pid in [*descendants(self.pid), self.pid]:  # what the function started goes with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_after(self, delay: float, reason: str) -> None:
        if self._kill_timer is None and self.state is not State.GONE:
            self._kill_timer = asyncio.get_running_loop().call_later(delay, self.kill, reason)

    def _close_sockets_after(self, grace: float, code: int) -> None:
        """Serve closes the sockets still open in `grace` s (sooner if an earlier deadline is set)."""
        if not self.sockets:
            return
        loop = asyncio.get_running_loop()
        timer = self._socket_deadline
        if timer is not None and timer.when() <= loop.time() + grace:
            return
        if timer is not None:
            timer.cancel()
        self._socket_deadline = loop.call_later(grace, self._close_sockets, code)

    def _close_sockets(self, code: int) -> None:
        self._socket_deadline = None
        for close in list(self.sockets.values()):
            close(code)

    def _stop_taking_requests(self) -> None:
        if self.state in (State.BOOTING, State.READY):
            self.state = State.RETIRING
            if self.lent:
                self.conn.recall()  # its lent connections come back as their requests end
            self.pool.on_retired(self)

    def _send_stop(self, grace: float, reason: str) -> None:
        self._pending_stop = None
        if self.state is not State.GONE:
            self.state = State.DRAINING
            self.conn.stop(grace, reason)
            self.kill_after(grace + KILL_MARGIN, "termination")

    # -- what the worker says --------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.kind == "task_start" and event.task:
            self.tasks[event.task] = event
        elif event.kind == "task_end" and event.task:
            self.tasks.pop(event.task, None)
            if event.fields.get("status") == "cancelled":
                self.cancelled_tasks += 1
        elif event.kind == "beforeunload":
            self.unload_reason = event.fields.get("reason")

    # -- the process's end -----------------------------------------------------------------------------

    def watch(self, pid: int) -> None:
        """Learn the process's death from the process itself (a pidfd), not from its socket, which a
        process it started may hold open. Without pidfds, the fork server's exit report alone tells."""
        self.pid = pid
        self.usage = TreeUsage(pid)
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already ended (and reaped)
            self._dead.set()
            return
        except (AttributeError, OSError):
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._process_ended)

    def _process_ended(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._dead.set()

    def exited(self, code: int) -> None:
        """The fork server's report: the process ended with `code` (negative: killed by that signal)."""
        self.exit_code = code
        self._code_known.set()
        self._process_ended()

    def socket_closed(self) -> None:
        """The socket reached EOF: every byte the worker wrote has been read."""
        self._socket_closed.set()
        self._stop_taking_requests()

    async def ended(self) -> None:
        await self._dead.wait()

    async def socket_drained(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._socket_closed.wait(), timeout)
        return self._socket_closed.is_set()

    async def code_reported(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._code_known.wait(), timeout)

    def gone(self, record: ExitRecord) -> None:
        self.state = State.GONE
        self.exit = record
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._socket_deadline is not None:
            self._socket_deadline.cancel()
        if self._pidfd is not None:
            self._process_ended()
        if self.lend_sock is not None:
            self.lend_sock.close()
        for output in self.outputs:
            output.close()
        self.pool.on_gone(self)


def exit_reason(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
