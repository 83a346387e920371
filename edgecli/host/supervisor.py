"""Every worker's lifecycle, in one place: spawn, retire, terminate, kill, reap — and resource limits.

Verbs (after gunicorn's arbiter): `spawn` boots a worker through the fork server; `retire` stops it taking
requests and lets it drain (it leaves with `early_drop` once settled); `terminate` ends a oneshot worker
right after its response; `kill` is the limit enforcer's SIGKILL; `reap` turns an exit into a readable
reason and a `shutdown` event. A monitor samples CPU and memory with psutil and applies DESIGN §5's
thresholds: 50 % wall clock or the CPU soft limit → retire, 90 % → beforeunload, 100 % → kill.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import psutil

from edgecli.config import Config, FunctionConfig, Limits
from edgecli.events import Event
from edgecli.host import deno
from edgecli.host.connection import BootError, WorkerConnection
from edgecli.host.deps import Dependencies, DependencyError
from edgecli.host.forkserver import ForkServer, ForkServerGone
from edgecli.host.output import PipeLines

MONITOR_INTERVAL = 0.05
NOTICE_GRACE = 0.1  # seconds between a late beforeunload notice and the limit kill
KILL_MARGIN = 2.0  # seconds past a drain deadline before a worker that did not leave is killed
FORKSERVER_RETRY_S = 2.0  # a fork server that dies again this soon after starting is left down
LIMIT_REASONS = ("wall_clock", "cpu", "memory")


class State(Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"  # takes no new requests; draining
    DEAD = "dead"


class PoolHooks(Protocol):
    def on_retired(self, worker: Worker) -> None: ...
    def on_gone(self, worker: Worker) -> None: ...


@dataclass(eq=False)
class Worker:
    id: str
    function: FunctionConfig
    generation: int
    conn: WorkerConnection
    pool: PoolHooks
    spawned_at: float = field(default_factory=time.monotonic)
    state: State = State.BOOTING
    pid: int | None = None
    process: psutil.Process | None = None
    cpu_base_ms: float = 0.0
    cpu_ms: float = 0.0
    memory_mb: float = 0.0
    inflight: dict[int, str] = field(default_factory=dict)  # channel -> request id
    tasks: dict[str, Event] = field(default_factory=dict)  # task id -> its task_start
    cancelled_tasks: int = 0
    notice_sent: bool = False
    unload_reason: str | None = None
    kill_reason: str | None = None
    exit_code: int | None = None
    kill_timer: asyncio.TimerHandle | None = None
    outputs: list[PipeLines] = field(default_factory=list)

    @property
    def limits(self) -> Limits:
        return self.function.limits

    @property
    def live(self) -> bool:
        return self.state is not State.DEAD

    def sole_request(self) -> str | None:
        """The request raw fd output most likely belongs to: the only one in flight, if exactly one."""
        return next(iter(self.inflight.values())) if len(self.inflight) == 1 else None


def exit_reason(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(
        self,
        config: Config,
        emit: Callable[[Event], None],
        env_for: Callable[[FunctionConfig], dict[str, str]],
    ) -> None:
        self.config = config
        self.emit = emit
        self.env_for = env_for
        self.workers: dict[str, Worker] = {}
        self.by_pid: dict[int, Worker] = {}
        self.forkserver = ForkServer(self.reap)
        self.dependencies = Dependencies(config.state_dir / "deps", emit)
        self._forkserver_started = 0.0  # monotonic time of the last (re)start
        self._monitor: asyncio.Task[None] | None = None
        # Per function, the boot failure last reported (pool, traceback): workers booting the same broken
        # code (oneshot's spares boot in parallel, and may race a reload) log its traceback once, not once
        # per worker. A successful boot forgets it.
        self._boot_failures: dict[str, tuple[int, str]] = {}

    async def start(self) -> None:
        self.forkserver.start()
        self._forkserver_started = time.monotonic()
        self._monitor = asyncio.get_running_loop().create_task(self.monitor())

    async def revive_forkserver(self) -> None:
        """The fork server died (the OOM killer, a signal...), and its workers with it (their parent-death
        signal): start a new one so that serving goes on. Not again within FORKSERVER_RETRY_S of the last
        start: one that cannot even start stays down, and requests get 503 until the next try."""
        if not self.forkserver.gone or time.monotonic() - self._forkserver_started < FORKSERVER_RETRY_S:
            return
        # Swapped before any await: a spawn racing this one finds the new server, not a second restart.
        old, self.forkserver = self.forkserver, ForkServer(self.reap)
        self.forkserver.start()
        self._forkserver_started = time.monotonic()
        await old.stop(timeout=0.5)  # reaps the dead one
        code = old.proc.returncode if old.proc is not None else None
        message = f"the fork server {exit_reason(code)}, taking its workers with it; started a new one"
        self.emit(Event(kind="log", level="warning", message=message))

    # -- spawn -----------------------------------------------------------------------------------------

    async def spawn(self, function: FunctionConfig, generation: int, pool: PoolHooks) -> Worker:
        """Start a worker and wait for it to boot. Raises BootError when the function cannot boot."""
        deps = await self._dependencies(function, pool)
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        worker_id = secrets.token_hex(3)
        conn = WorkerConnection(  # the lambdas see `worker`, bound on the next line
            lambda payload: self.on_event(worker, payload),
            lambda reason: self.retire(worker, reason),
            lambda: self.on_lost(worker),
        )
        worker = Worker(id=worker_id, function=function, generation=generation, conn=conn, pool=pool)
        self.workers[worker_id] = worker
        await loop.connect_accepted_socket(lambda: conn.proto, ours)
        worker.outputs = [
            await PipeLines.attach(out_r, "info", lambda text, lvl: self.raw_output(worker, text, lvl)),
            await PipeLines.attach(err_r, "error", lambda text, lvl: self.raw_output(worker, text, lvl)),
        ]
        spec = {
            "worker": worker_id,
            "function": function.name,
            "entrypoint": str(function.entrypoint),
            "directory": str(function.directory),
            "functions_dir": str(self.config.functions_dir),
            "env": self.env_for(function),
            "deps": str(deps) if deps is not None else "",
        }
        if function.runtime == "deno":
            spec["argv"] = deno.worker_argv(function, worker_id)
        if self.forkserver.gone:
            await self.revive_forkserver()
        try:
            worker.pid = await self.forkserver.spawn(spec, [theirs.detach(), out_w, err_w])
        except ForkServerGone as exc:
            conn.proto.close()
            message = f"cannot start a worker: {exc}; a new one starts shortly (if this lasts, restart serve)"
            raise BootError(message, transient=True) from None
        self.by_pid[worker.pid] = worker
        try:
            ready = await self._booted(worker)
        except BootError as exc:
            failure = (id(pool), exc.error)
            # Not reported: a boot we cut short ourselves (shutdown), or the same failure again.
            if worker.kill_reason is None and self._boot_failures.get(function.name) != failure:
                self._boot_failures[function.name] = failure
                self.emit(self.event(worker, "boot_error", exc.message, "error", error=exc.error))
            self.kill(worker, "boot_error")
            raise
        self._boot_failures.pop(function.name, None)
        worker.cpu_base_ms = float(ready.get("cpu_ms", 0.0))
        if worker.state is State.BOOTING:
            worker.state = State.READY
        self.emit(self.event(worker, "boot", f"booted in {ready['boot_ms']} ms", boot_ms=ready["boot_ms"]))
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
            failure = (id(pool), exc.message)
            if self._boot_failures.get(function.name) != failure:
                self._boot_failures[function.name] = failure
                self.emit(
                    Event(
                        kind="boot_error",
                        message=exc.message,
                        level="error",
                        function=function.name,
                        fields={"error": exc.message},
                    )
                )
            raise BootError(exc.message) from None

    # -- retire / terminate / kill ---------------------------------------------------------------------

    def retire(self, worker: Worker, reason: str) -> None:
        """No new requests; drain for up to graceful_exit_timeout_sec, then leave (`early_drop`)."""
        if worker.state not in (State.BOOTING, State.READY):
            return
        self._stop_taking_requests(worker)
        self.emit(self.event(worker, "log", f"worker retired ({reason}); draining", "debug"))
        grace = worker.limits.graceful_exit_timeout_sec
        worker.conn.stop(grace, "early_drop")
        self._kill_after(worker, grace + KILL_MARGIN, "termination")

    def terminate(self, worker: Worker) -> None:
        """Leave now: beforeunload(termination), pending tasks cancelled (oneshot after its response)."""
        self.drain(worker, 0)

    def drain(self, worker: Worker, grace: float) -> None:
        """Finish requests and tasks within `grace` (0: none), then beforeunload(termination)."""
        if worker.state is State.DEAD:
            return
        if worker.state is State.BOOTING:
            # Still importing the module (perhaps stuck there): it holds no request and no task, and
            # cannot read a STOP until the import ends. Nothing to drain: stop it now.
            self.kill(worker, "termination")
            return
        self._stop_taking_requests(worker)
        worker.conn.stop(grace, "termination")
        self._kill_after(worker, grace + KILL_MARGIN, "termination")

    def _stop_taking_requests(self, worker: Worker) -> None:
        if worker.state is not State.RETIRING:
            worker.state = State.RETIRING
            worker.pool.on_retired(worker)

    def kill_booting(self, pool: PoolHooks) -> None:
        """Stop `pool`'s workers still importing old code (after a reload): perhaps stuck at import,
        they would hold a boot slot until their wall clock runs out."""
        for worker in list(self.workers.values()):
            if worker.pool is pool and worker.state is State.BOOTING:
                self.kill(worker, "termination")

    def kill(self, worker: Worker, reason: str) -> None:
        if worker.state is State.DEAD or worker.pid is None:
            return
        if worker.kill_reason is None:
            worker.kill_reason = reason
        self._stop_taking_requests(worker)
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_after(self, worker: Worker, delay: float, reason: str) -> None:
        if worker.kill_timer is None:
            loop = asyncio.get_running_loop()
            worker.kill_timer = loop.call_later(delay, self.kill, worker, reason)

    # -- events from workers ---------------------------------------------------------------------------

    def on_event(self, worker: Worker, payload: bytes) -> None:
        event = Event.from_row_json(payload)
        kind = event.kind
        if kind == "task_start" and event.task:
            worker.tasks[event.task] = event
        elif kind == "task_end" and event.task:
            worker.tasks.pop(event.task, None)
            if event.fields.get("status") == "cancelled":
                worker.cancelled_tasks += 1
        elif kind == "beforeunload":
            worker.unload_reason = event.fields.get("reason")
        self.emit(event)

    def raw_output(self, worker: Worker, text: str, level: str) -> None:
        self.emit(self.event(worker, "log", text, level, request=worker.sole_request(), stream="fd"))

    def event(
        self,
        worker: Worker,
        kind: str,
        message: str,
        level: str = "info",
        request: str | None = None,
        task: str | None = None,
        **fields: Any,
    ) -> Event:
        return Event(
            kind=kind,
            message=message,
            level=level,
            function=worker.function.name,
            worker=worker.id,
            request=request,
            task=task,
            fields=fields,
        )

    # -- reap ------------------------------------------------------------------------------------------

    def on_lost(self, worker: Worker) -> None:
        """The worker's socket closed: it is gone (or going). Fail what it held, tell its pool."""
        if worker.state is State.DEAD:
            return
        worker.state = State.DEAD
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        worker.pool.on_gone(worker)
        if worker.exit_code is not None or worker.pid is None:
            self.finish(worker)
        else:
            # The fork server reports the exit status a moment later; don't wait for it forever.
            asyncio.get_running_loop().call_later(1.0, self.finish, worker)

    def reap(self, pid: int, code: int) -> None:
        """Called by the fork server for every worker exit."""
        worker = self.by_pid.pop(pid, None)
        if worker is None:
            return
        worker.exit_code = code
        if worker.state is State.DEAD:
            self.finish(worker)
        else:
            # A child process may hold the socket open; the worker is gone. What it wrote first is kept.
            worker.conn.read_remaining()
            worker.conn.proto.close()

    def finish(self, worker: Worker) -> None:
        if self.workers.pop(worker.id, None) is None:
            return
        for output in worker.outputs:
            output.close()
        reason = self.shutdown_reason(worker)
        for task_id, start in list(worker.tasks.items()):
            # A task_end always follows its task_start, even when the worker was killed under it.
            self.emit(
                self.event(
                    worker,
                    "task_end",
                    f"task {start.fields.get('name')} cancelled ({reason})",
                    "warning",
                    request=start.request,
                    task=task_id,
                    name=start.fields.get("name"),
                    status="cancelled",
                    duration_ms=round((time.time() - start.ts) * 1000, 3),
                    error=None,
                    reason=reason,
                )
            )
            worker.cancelled_tasks += 1
        worker.tasks.clear()
        bye = worker.conn.bye or {}
        cpu_ms = float(bye.get("cpu_ms", worker.cpu_ms + worker.cpu_base_ms)) - worker.cpu_base_ms
        memory_mb = float(bye.get("memory_mb", worker.memory_mb))
        level = "error" if reason in LIMIT_REASONS or reason.startswith(("killed", "exited")) else "info"
        message = f"worker stopped ({reason}): {round(cpu_ms)} ms CPU, {memory_mb:.0f} MB"
        self.emit(
            self.event(
                worker,
                "shutdown",
                message,
                level,
                reason=reason,
                cpu_ms=round(cpu_ms, 1),
                memory_mb=memory_mb,
            )
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

    # -- limits ----------------------------------------------------------------------------------------

    async def monitor(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                if worker.live and worker.pid is not None and worker.kill_reason is None:
                    self.check_limits(worker, now)

    def check_limits(self, worker: Worker, now: float) -> None:
        limits = worker.limits
        if worker.process is None:
            try:
                worker.process = psutil.Process(worker.pid)
            except psutil.Error:
                return
        try:
            with worker.process.oneshot():
                times = worker.process.cpu_times()
                rss = worker.process.memory_info().rss
        except psutil.Error:
            return
        worker.cpu_ms = (times.user + times.system) * 1000
        worker.memory_mb = rss / (1024 * 1024)
        booted = worker.state is not State.BOOTING
        cpu_used = worker.cpu_ms - worker.cpu_base_ms if booted else 0.0
        checks = (
            (
                "wall_clock",
                now - worker.spawned_at,
                limits.wall_clock_limit_sec,
                0.5 * limits.wall_clock_limit_sec,
            ),
            ("cpu", cpu_used, limits.cpu_time_hard_limit_ms, limits.cpu_time_soft_limit_ms),
            ("memory", worker.memory_mb, limits.memory_limit_mb, 0),
        )
        for reason, used, hard, soft in checks:
            if not hard:
                if soft and used >= soft:
                    self.retire(worker, reason)
                continue
            if used >= hard:
                self.kill_for_limit(worker, reason, used, hard)
                return
            if used >= 0.9 * hard and not worker.notice_sent:
                worker.notice_sent = True
                worker.conn.notice(reason)
            if soft and used >= soft:
                self.retire(worker, reason)

    def kill_for_limit(self, worker: Worker, reason: str, used: float, limit: float) -> None:
        unit = {"wall_clock": "s", "cpu": "ms", "memory": "MB"}[reason]
        self.emit(
            self.event(
                worker,
                "log",
                f"{reason} limit reached ({used:.0f} {unit} of {limit:g} {unit}): killing the worker; "
                f"it used {worker.cpu_ms - worker.cpu_base_ms:.0f} ms CPU and {worker.memory_mb:.0f} MB",
                "error",
                request=worker.sole_request(),
            )
        )
        worker.kill_reason = reason
        if worker.notice_sent:
            self.kill(worker, reason)
            return
        # The limit was crossed between two samples, 90 % unseen: the function still hears
        # beforeunload (if its loop is free), and is killed a moment later.
        worker.notice_sent = True
        worker.conn.notice(reason)
        asyncio.get_running_loop().call_later(NOTICE_GRACE, self.kill, worker, reason)

    # -- shutdown --------------------------------------------------------------------------------------

    def running_tasks(self) -> list[str]:
        """The function of each background task running now, one entry per task."""
        return [worker.function.name for worker in self.workers.values() for _ in worker.tasks]

    def stop_now(self) -> None:
        """Serve was told twice to stop: every worker goes now; its running tasks end as cancelled
        (termination), recorded by `finish`."""
        for worker in list(self.workers.values()):
            self.kill(worker, "termination")

    async def shutdown(self, grace: float) -> None:
        """Drain every worker for up to `grace` s, kill what is left, stop the fork server."""
        for worker in list(self.workers.values()):
            self.drain(worker, grace)
        deadline = time.monotonic() + grace + KILL_MARGIN + 1
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for worker in list(self.workers.values()):
            self.kill(worker, "termination")
        deadline = time.monotonic() + 2
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._monitor is not None:
            self._monitor.cancel()
        await self.dependencies.close()
        await self.forkserver.stop()
        for worker in list(self.workers.values()):
            self.finish(worker)
