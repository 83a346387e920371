"""The worker handle without processes: states, when STOP is sent, request streams, the exit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edgecli import ipc
from edgecli.config import FunctionConfig
from edgecli.events import Event
from edgecli.host.connection import ResponseStream
from edgecli.host.lending import Lender
from edgecli.host.limits import Action, Verdict
from edgecli.host.supervisor import Supervisor
from edgecli.host.worker import ExitRecord, Lent, State, Worker
from edgecli.ipc import Kind

pytestmark = pytest.mark.timeout(10)


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.channels = 0
        self.bye: dict[str, Any] | None = None

    def open(self, scope_payload: bytes, first_body: bytes, more: bool) -> tuple[int, ResponseStream]:
        self.channels += 1
        self.sent.append(("request", json.loads(scope_payload)["request_id"]))
        return self.channels, ResponseStream()

    def close_channel(self, channel: int) -> None:
        self.sent.append(("closed", channel))

    def stop(self, grace: float, reason: str) -> None:
        self.sent.append(("stop", (grace, reason)))

    def notice(self, reason: str) -> None:
        self.sent.append(("notice", reason))


class FakePool:
    def __init__(self) -> None:
        self.retired: list[Worker] = []
        self.gone: list[Worker] = []

    def on_retired(self, worker: Worker) -> None:
        self.retired.append(worker)

    def on_gone(self, worker: Worker) -> None:
        self.gone.append(worker)


def make_worker() -> tuple[Worker, FakeConn, FakePool]:
    conn, pool = FakeConn(), FakePool()
    function = FunctionConfig(name="f", entrypoint=Path("x"), directory=Path("."))
    worker = Worker("w1", function, 0, conn, pool)  # type: ignore[arg-type]
    worker.booted(5.0)
    return worker, conn, pool


def supervised() -> tuple[Supervisor, list[Event], Worker, FakeConn, FakePool]:
    """A worker known to a supervisor that records what it emits."""
    events: list[Event] = []
    supervisor = Supervisor(events.append, lambda function: {}, Path("deps-never-used"))
    worker, conn, pool = make_worker()
    supervisor.workers[worker.id] = worker
    return supervisor, events, worker, conn, pool


SCOPE = {"type": "http", "method": "GET", "path": "/f", "headers": [], "query_string": b""}


def test_a_retiring_worker_is_told_to_stop_only_once_its_requests_are_done() -> None:
    async def main() -> None:
        worker, conn, pool = make_worker()
        assert worker.state is State.READY
        worker.opened(1, "r1")
        assert worker.inflight == {1: "r1"} and worker.load == 1
        assert worker.retire(2.0, "early_drop")
        assert worker.state is State.RETIRING and pool.retired == [worker]
        assert not any(kind == "stop" for kind, _ in conn.sent), "the request runs to its end"
        worker.closed(1)
        assert conn.sent[-1] == ("stop", (2.0, "early_drop"))
        assert worker.state is State.DRAINING and not worker.inflight
        assert not worker.retire(2.0, "early_drop"), "only once"

    asyncio.run(main())


def test_an_idle_worker_is_told_to_stop_at_once_and_a_drain_names_its_deadline() -> None:
    async def main() -> None:
        worker, conn, _ = make_worker()
        worker.retire(1.0, "early_drop")
        assert conn.sent == [("stop", (1.0, "early_drop"))]
        other, other_conn, _ = make_worker()
        other.opened(1, "r2")
        other.drain(3.0, "shutdown")
        assert other_conn.sent[-1] == ("stop", (3.0, "termination")), "a drain does not wait"
        assert other.deadline == "shutdown"

    asyncio.run(main())


def test_a_request_opened_through_the_handle_is_in_flight_until_closed_and_a_failure_says_why() -> None:
    async def main() -> None:
        worker, conn, _ = make_worker()
        channel, stream = worker.open_request(json.dumps({"request_id": "r1"}).encode(), b"", False, "r1")
        assert isinstance(stream, ResponseStream) and worker.inflight == {channel: "r1"}
        assert conn.sent == [("request", "r1")]
        assert worker.why_failed() == (None, None)
        worker.drain(3.0, "shutdown")
        assert worker.why_failed() == (None, "shutdown")
        worker.close_request(channel)
        assert not worker.inflight and ("closed", channel) in conn.sent

    asyncio.run(main())


def test_open_sockets_get_the_graceful_timeout_then_serve_closes_them() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker, conn, _ = make_worker()
        closed: list[tuple[str, int, float]] = []
        started = loop.time()
        worker.opened(1, "socket", lambda code: closed.append(("socket", code, loop.time() - started)))
        worker.opened(2, "plain request")
        assert worker.retire(0.2, "early_drop", 1012)
        assert not any(kind == "stop" for kind, _ in conn.sent), "a socket is in flight"
        deadline = loop.time() + 5
        while not closed and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert closed and closed[0][:2] == ("socket", 1012) and closed[0][2] >= 0.2
        worker.closed(1)
        assert not any(kind == "stop" for kind, _ in conn.sent), "the plain request runs to its end"
        worker.closed(2)
        assert conn.sent[-1] == ("stop", (0.2, "early_drop"))

    asyncio.run(main())


def test_a_drain_brings_a_later_socket_deadline_forward_and_a_closed_socket_is_left_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker, _, _ = make_worker()
        codes: list[int] = []
        worker.opened(1, "socket", codes.append)
        worker.opened(2, "closed early", lambda code: codes.append(-code))
        worker.retire(30.0, "early_drop")  # a retirement for the worker's own reasons: 1001, later
        worker.closed(2)
        worker.drain(0.05, "shutdown")
        deadline = loop.time() + 5
        while not codes and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert codes == [1012], "serve stopping closes with 1012, and only the socket still open"

    asyncio.run(main())


def test_a_notice_is_sent_once_and_task_events_are_tracked() -> None:
    worker, conn, _ = make_worker()
    worker.notice("cpu")
    worker.notice("memory")
    assert conn.sent == [("notice", "cpu")]
    worker.on_event(Event("task_start", task="t1", fields={"name": "job"}))
    assert not worker.idle
    worker.on_event(Event("task_end", task="t1", fields={"status": "cancelled"}))
    assert worker.idle and worker.cancelled_tasks == 1


def test_the_exit_record_never_says_negative_cpu() -> None:
    # The last sample can lag the CPU time the worker reported at boot (a wall-clock kill during a
    # quiet moment): what it used is then 0, not a negative number.
    async def main() -> None:
        supervisor, events, worker, _, pool = supervised()
        worker.cpu_ms = 2.0  # below the 5 ms it reported at boot
        worker.noticed = True
        supervisor.enforcer.kill_for_limit(worker, Verdict(Action.KILL, "wall_clock", 10.2, 10))
        supervisor.finish(worker)
        assert worker.state is State.GONE and pool.gone == [worker]
        assert isinstance(worker.exit, ExitRecord) and worker.exit.cpu_ms == 0.0
        killing, down = events
        assert (
            "wall_clock limit reached (10 s of 10 s): killing the worker; it used 0 ms CPU" in killing.message
        )
        assert down.kind == "shutdown" and down.fields["cpu_ms"] == 0.0 and "-" not in down.message
        assert down.fields["reason"] == "wall_clock"

    asyncio.run(main())


def test_an_exit_reported_before_the_sockets_last_bytes_waits_for_them() -> None:
    # The fork server's report can overtake the worker's last frames (its beforeunload and BYE): the
    # exit is recorded only once the socket has been read to the end, so the reason is the worker's own.
    async def main() -> None:
        supervisor, events, worker, conn, _ = supervised()
        reaper = asyncio.ensure_future(supervisor.reap_when_dead(worker))
        worker.exited(0)
        await asyncio.sleep(0.05)
        assert not events, "nothing is decided while the socket may still hold frames"
        worker.on_event(Event("beforeunload", fields={"reason": "early_drop"}))
        conn.bye = {"cpu_ms": 12.0, "memory_mb": 20.0}
        worker.socket_closed()
        await asyncio.wait_for(reaper, 5)
        (down,) = events
        assert down.fields["reason"] == "early_drop" and down.level == "info"
        assert worker.exit is not None and worker.exit.code == 0 and worker.exit.cpu_ms == 7.0

    asyncio.run(main())


def test_a_lent_request_counts_in_the_worker_s_load_from_its_head_to_its_record() -> None:
    """The pool sends new requests to the least loaded worker: one serving lent connections is busy
    with each request in flight on them, though serve never opened a channel for it."""

    async def main() -> None:
        worker, _, _ = make_worker()
        recorded: list[Event] = []
        lender = Lender(make_protocol=lambda: None, emit=recorded.append)  # type: ignore[arg-type,return-value]
        worker.lend(7, Lent(-1))
        worker.lend(8, Lent(-1))
        assert worker.load == 0
        busy = ipc.busy_payload("r 1", "GET", b"/functions/v1/f/a%20b?x=1")
        lender.on_frame(worker, Kind.LENT_BUSY, 7, busy)
        assert (worker.load, worker.sole_request()) == (1, "r 1")
        worker.opened(1, "r2")  # and one through serve
        assert (worker.load, worker.sole_request()) == (2, None)
        lender.on_frame(worker, Kind.LENT_STARTED, 7, b"")
        lender.on_frame(worker, Kind.LENT_ENDED, 7, ipc.ended_payload(201, 1.25, busy))
        worker.closed(1)
        assert worker.load == 0
        [event] = recorded
        assert (event.kind, event.request, event.function, event.worker) == ("request", "r 1", "f", worker.id)
        assert event.fields == {
            "method": "GET",
            "path": "/functions/v1/f/a b",
            "status": 201,
            "duration_ms": 1.25,
        }

    asyncio.run(main())
