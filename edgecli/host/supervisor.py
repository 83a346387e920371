"""Every worker's lifecycle, in one place: spawn, retire, terminate, kill, reap — and resource limits.

Verbs (after gunicorn's arbiter): `spawn` boots a worker through the fork server; `retire` stops it taking
requests, lets those in flight finish, then drains it (it leaves with `early_drop` once settled);
`terminate` ends a oneshot worker right after its response; `kill` is the limit enforcer's SIGKILL;
`reap` turns a dead process into one exit record and a `shutdown` event. The limits are host/enforcer.py's
to apply. See docs/architecture.md, "Workers".
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecli import events
from edgecli.config import FunctionConfig
from edgecli.events import Event, Level
from edgecli.host import deno
from edgecli.host.connection import BootError, WorkerConnection
from edgecli.host.deps import Dependencies, DependencyError
from edgecli.host.enforcer import LimitEnforcer
from edgecli.host.forkserver import ForkServer, ForkServerGone
from edgecli.host.output import PipeLines

if TYPE_CHECKING:
    from edgecli.host.lending import Lender
from edgecli.host.worker import (
    GOING_AWAY,
    KILL_MARGIN,
    LIMIT_REASONS,
    RESTART,
    ExitRecord,
    PoolHooks,
    State,
    Worker,
    exit_reason,
)

FORKSERVER_RETRY_S = 2.0  # a fork server that dies again this soon after starting is left down
# Once a worker's process is dead: how long its socket may take to deliver its last bytes (a process it
# started may hold the socket open), and how long the fork server's exit report may take to arrive.
SOCKET_DRAIN_S = 0.5
EXIT_REPORT_S = 0.5
UNCLAIMED_KEPT = 64


class Supervisor:
    def __init__(
        self,
        emit: Callable[[Event], None],
        spec_for: Callable[[FunctionConfig], dict[str, Any]],
        deps_dir: Path,
    ) -> None:
        self.emit = emit
        self.spec_for = spec_for  # what the fork server needs to start a worker of a function
        self.workers: dict[str, Worker] = {}
        self.by_pid: dict[int, Worker] = {}
        self.forkserver = ForkServer(self.reap)
        self.dependencies = Dependencies(deps_dir, emit)  # functions' own packages (host/deps.py)
        self.enforcer = LimitEnforcer(self.workers, emit, self.retire)
        self.type_checks = deno.TypeChecks()  # TypeScript functions' `deno check` (host/deno.py)
        self._forkserver_started = 0.0  # monotonic time of the last (re)start
        self._monitor: asyncio.Task[None] | None = None
        self._reapers: set[asyncio.Task[None]] = set()
        self._unclaimed: dict[int, int] = {}  # pid -> exit code reported before its spawn returned
        # Per function, the boot failure last reported (pool, traceback): workers booting the same broken
        # code (oneshot's spares boot in parallel, and may race a reload) log its traceback once, not once
        # per worker. A successful boot forgets it.
        self._boot_failures: dict[str, tuple[int, str]] = {}
        self.lender: Lender | None = None  # serve's lent connections (host/lending.py); set once it serves
        self.preload: tuple[str, ...] = ()  # modules the fork server imports for every worker

    async def start(self) -> None:
        self.forkserver.start(preload=self.preload)
        self._forkserver_started = time.monotonic()
        self._monitor = asyncio.get_running_loop().create_task(self.enforcer.run())

    async def revive_forkserver(self) -> None:
        """The fork server died (the OOM killer, a signal...), and its workers with it (their parent-death
        signal): start a new one so that serving goes on. Not again within FORKSERVER_RETRY_S of the last
        start: one that cannot even start stays down, and requests get 503 until the next try."""
        if not self.forkserver.gone or time.monotonic() - self._forkserver_started < FORKSERVER_RETRY_S:
            return
        # Swapped before any await: a spawn racing this one finds the new server, not a second restart.
        old, self.forkserver = self.forkserver, ForkServer(self.reap)
        self.forkserver.start(preload=self.preload)
        self._forkserver_started = time.monotonic()
        await old.stop(timeout=0.5)  # reaps the dead one
        code = old.proc.returncode if old.proc is not None else None
        message = f"the fork server {exit_reason(code)}, taking its workers with it; started a new one"
        self.emit(events.log(message, "warning"))

    # -- spawn -----------------------------------------------------------------------------------------

    async def spawn(self, function: FunctionConfig, generation: int, pool: PoolHooks) -> Worker:
        """Start a worker and wait for it to boot. Raises BootError when the function cannot boot."""
        deps = await self._dependencies(function, pool)
        if function.runtime == "deno":
            await self._type_check(function, generation, pool)
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        lend_ours, lend_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        lend_ours.setblocking(False)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        worker_id = secrets.token_hex(3)
        conn = WorkerConnection(  # the lambdas see `worker`, bound on the next line
            lambda payload: self.on_event(worker, payload),
            lambda reason: self.retire(worker, reason),
            lambda: worker.socket_closed(),
            lambda kind, channel, payload: self.on_lent(worker, kind, channel, payload),
            lambda message: self.emit(events.log(message, "error", **worker.context())),
        )
        worker = Worker(id=worker_id, function=function, generation=generation, conn=conn, pool=pool)
        worker.lend_sock = lend_ours
        self.workers[worker_id] = worker
        await loop.connect_accepted_socket(lambda: conn.proto, ours)
        worker.outputs = [
            await PipeLines.attach(out_r, "info", lambda text, _: self.raw_output(worker, text, "info")),
            await PipeLines.attach(err_r, "error", lambda text, _: self.raw_output(worker, text, "error")),
        ]
        spec = {"worker": worker_id, **self.spec_for(function), "deps": str(deps) if deps is not None else ""}
        if function.runtime == "deno":
            spec["argv"] = deno.worker_argv(function, worker_id, self.type_checks.lock_for(function))
        if self.forkserver.gone:
            await self.revive_forkserver()
        try:
            pid = await self.forkserver.spawn(spec, [theirs.detach(), out_w, err_w, lend_theirs.detach()])
        except ForkServerGone as exc:
            conn.proto.close()
            self.finish(worker)
            message = f"cannot start a worker: {exc}; a new one starts shortly (if this lasts, restart serve)"
            raise BootError(message, transient=True) from None
        self.by_pid[pid] = worker
        worker.watch(pid)
        if pid in self._unclaimed:  # it ended before this coroutine resumed
            worker.exited(self._unclaimed.pop(pid))
        reaper = loop.create_task(self.reap_when_dead(worker))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        try:
            ready = await self._booted(worker)
        except BootError as exc:
            failure = (id(pool), exc.error)
            # Not reported: a boot we cut short ourselves (shutdown), or the same failure again.
            if worker.kill_reason is None and self._boot_failures.get(function.name) != failure:
                self._boot_failures[function.name] = failure
                self.emit(events.boot_error(exc.error, exc.message, **worker.context()))
            worker.kill("boot_error")
            raise
        self._boot_failures.pop(function.name, None)
        worker.booted(float(ready.get("cpu_ms", 0.0)))
        self.emit(events.boot(ready["boot_ms"], **worker.context()))
        return worker

    @staticmethod
    async def _booted(worker: Worker) -> dict[str, Any]:
        """READY's payload; a module still importing after boot_timeout_sec is a boot error."""
        timeout = worker.limits.boot_timeout_sec
        if not timeout:
            return await worker.conn.ready
        try:
            return await asyncio.wait_for(asyncio.shield(worker.conn.ready), timeout)
        except TimeoutError:
            # The worker is killed next; its `ready` then fails, and nobody is left to look.
            worker.conn.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            message = (
                f"{worker.function.name} did not finish booting within {timeout:g} s (boot_timeout_sec): "
                "something at module level blocks (a network call, a sleep, a long computation); move it "
                "into the handler, or raise boot_timeout_sec in config.toml"
            )
            raise BootError(message) from None

    async def _dependencies(self, function: FunctionConfig, pool: PoolHooks) -> Path | None:
        """The function's installed dependencies folder; an install failure is its boot error."""
        try:
            return await self.dependencies.ensure(function)
        except DependencyError as exc:
            self._failed_before_fork(function, pool, exc.message, exc.message)
            raise BootError(exc.message) from None

    async def _type_check(self, function: FunctionConfig, generation: int, pool: PoolHooks) -> None:
        """A TypeScript function's type check, once per generation of its code; a failure is its boot
        error, with Deno's message."""
        env = self.spec_for(function).get("env", {})
        timeout = function.limits.boot_timeout_sec
        try:
            took_ms = await self.type_checks.ensure(function, (id(pool), generation), env, timeout)
        except deno.TypeCheckError as exc:
            self._failed_before_fork(function, pool, exc.message, exc.error)
            raise BootError(exc.message, exc.error) from None
        if took_ms is not None:  # said, as a first request after a change may wait this long for it
            message = f"type-checked {function.entrypoint.name} in {took_ms:.0f} ms (deno check)"
            self.emit(events.log(message, "info", function=function.name))

    def _failed_before_fork(
        self, function: FunctionConfig, pool: PoolHooks, message: str, error: str
    ) -> None:
        failure = (id(pool), error)
        if self._boot_failures.get(function.name) != failure:
            self._boot_failures[function.name] = failure
            self.emit(events.boot_error(error, message, function=function.name))

    # -- retire / terminate / kill ---------------------------------------------------------------------

    def retire(self, worker: Worker, reason: str) -> None:
        """No new requests; those in flight run to their end, then a drain of graceful_exit_timeout_sec
        for background tasks, then the worker leaves (`early_drop`)."""
        code = RESTART if reason == "reload" else GOING_AWAY  # for its open WebSockets
        if worker.retire(worker.limits.graceful_exit_timeout_sec, "early_drop", code):
            self.emit(events.log(f"worker retired ({reason}); draining", "debug", **worker.context()))

    def terminate(self, worker: Worker) -> None:
        """Leave now: beforeunload(termination), pending tasks cancelled (oneshot after its response)."""
        worker.drain(0)

    def kill_booting(self, pool: PoolHooks) -> None:
        """Stop `pool`'s workers still importing old code (after a reload): perhaps stuck at import,
        they would hold a boot slot until their wall clock runs out."""
        for worker in list(self.workers.values()):
            if worker.pool is pool and worker.state is State.BOOTING:
                worker.kill("termination")

    # -- events from workers ---------------------------------------------------------------------------

    def on_event(self, worker: Worker, payload: bytes) -> None:
        event = Event.from_row_json(payload)
        worker.on_event(event)
        self.emit(event)

    def on_lent(self, worker: Worker, kind: int, channel: int, payload: bytes) -> None:
        if self.lender is not None:
            self.lender.on_frame(worker, kind, channel, payload)

    def raw_output(self, worker: Worker, text: str, level: Level) -> None:
        self.emit(events.log(text, level, stream="fd", **worker.context(request=worker.sole_request())))

    # -- reap ------------------------------------------------------------------------------------------

    def reap(self, pid: int, code: int) -> None:
        """The fork server's report of a worker's exit (it is their parent, so it has the status)."""
        worker = self.by_pid.pop(pid, None)
        if worker is not None:
            worker.exited(code)
            return
        # Its spawn is not done yet (the report came in the same read as the pid): keep it for spawn.
        self._unclaimed[pid] = code
        while len(self._unclaimed) > UNCLAIMED_KEPT:
            del self._unclaimed[next(iter(self._unclaimed))]

    async def reap_when_dead(self, worker: Worker) -> None:
        """The one place a worker's end is decided: once its process is dead (learned from the process),
        its socket is read to the end, then its exit is recorded."""
        await worker.ended()
        if not await worker.socket_drained(SOCKET_DRAIN_S):
            # A process it started holds the socket open; the worker is gone. What it wrote is kept.
            worker.conn.read_remaining()
            worker.conn.proto.close()
        if worker.exit_code is None and not self.forkserver.gone:
            await worker.code_reported(EXIT_REPORT_S)
        self.finish(worker)

    def finish(self, worker: Worker) -> None:
        if self.workers.pop(worker.id, None) is None:
            return
        if worker.pid is not None:
            self.by_pid.pop(worker.pid, None)
        reason = self.shutdown_reason(worker)
        for task_id, start in list(worker.tasks.items()):
            # A task_end always follows its task_start, even when the worker was killed under it.
            self.emit(self.cancelled_task(worker, task_id, start, reason))
            worker.cancelled_tasks += 1
        worker.tasks.clear()
        bye = worker.conn.bye or {}
        cpu_ms = max(float(bye.get("cpu_ms", worker.cpu_ms)), worker.cpu_ms) - worker.cpu_base_ms
        memory_mb = max(float(bye.get("memory_mb", worker.memory_mb)), worker.memory_mb)
        record = ExitRecord(reason, worker.exit_code, max(cpu_ms, 0.0), memory_mb)
        if self.lender is not None:
            self.lender.worker_gone(worker)
        worker.gone(record)
        level: Level = (
            "error" if reason in LIMIT_REASONS or reason.startswith(("killed", "exited")) else "info"
        )
        message = f"worker stopped ({reason}): {round(record.cpu_ms)} ms CPU, {memory_mb:.0f} MB"
        cpu = round(record.cpu_ms, 1)
        self.emit(events.shutdown(reason, cpu, memory_mb, level, message, **worker.context()))

    def cancelled_task(self, worker: Worker, task_id: str, start: Event, reason: str) -> Event:
        duration_ms = round((time.time() - start.ts) * 1000, 3)
        context = worker.context(request=start.request, task=task_id)
        return events.task_end(
            str(start.fields.get("name")), "cancelled", duration_ms, reason=reason, **context
        )

    @staticmethod
    def shutdown_reason(worker: Worker) -> str:
        if worker.kill_reason is not None:
            return worker.kill_reason
        if worker.conn.bye is not None and worker.unload_reason is not None:
            return worker.unload_reason
        if worker.conn.bye is not None:
            return "termination"
        return exit_reason(worker.exit_code)

    def report_cut(self, worker: Worker, grace: float) -> None:
        """Say, for the record of each request still in flight at the deadline, that serve cut it."""
        for request in list(worker.inflight.values()):
            message = (
                f"request cut off: serve is shutting down and graceful_exit_timeout_sec ({grace:g} s) "
                "ran out before the response was complete"
            )
            self.emit(events.log(message, "warning", cut_by="shutdown", **worker.context(request=request)))

    # -- shutdown --------------------------------------------------------------------------------------

    def running_tasks(self) -> list[str]:
        """The function of each background task running now, one entry per task."""
        return [worker.function.name for worker in self.workers.values() for _ in worker.tasks]

    def stop_now(self) -> None:
        """Serve was told twice to stop: every worker goes now; its running tasks end as cancelled
        (termination), recorded by `finish`."""
        for worker in list(self.workers.values()):
            worker.kill("termination")

    async def shutdown(self, cap: float | None = None) -> None:
        """Drain every worker for its own function's graceful_exit_timeout_sec (at most `cap` s), kill
        what is left, stop the fork server."""
        longest = 0.0
        loop = asyncio.get_running_loop()
        for worker in list(self.workers.values()):
            grace = worker.limits.graceful_exit_timeout_sec
            grace = grace if cap is None else min(grace, cap)
            longest = max(longest, grace)
            worker.drain(grace, "shutdown")
            loop.call_later(grace, self.report_cut, worker, grace)
        deadline = time.monotonic() + longest + KILL_MARGIN + 1
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for worker in list(self.workers.values()):
            worker.kill("termination")
        deadline = time.monotonic() + 2
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._monitor is not None:
            self._monitor.cancel()
        await self.dependencies.close()
        self.type_checks.forget()
        await self.forkserver.stop()
        for reaper in list(self._reapers):
            reaper.cancel()
        for worker in list(self.workers.values()):
            self.finish(worker)
