"""Per-function worker pools, one class per policy (see docs/architecture.md, "Policies").

A pool hands the relay a worker that may take one more request (`acquire`), hears back when the
response is done (`release`), and is told by the supervisor when a worker retires or is gone. Requests
wait for a worker up to `request_wait_timeout_ms` (then 504). A function that failed to boot stays
`broken` (503) until it is reloaded, instead of being respawned in a loop.

- PerWorkerPool: warm workers reused by many concurrent requests; more are started (up to
  max_parallelism) only when the warm ones are saturated or retired.
- PerRequestPool: one request at a time per worker; an idle worker is reused, and leaves once it has
  had neither requests nor background tasks for a moment. A worker that has served nothing yet (the one
  booted at start-up or reload) waits for its first request instead: else every function's warm worker
  would stop, all at once, a moment after start-up.
- OneshotPool: every request gets a fresh, already-booted spare; after the response it is terminated.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from edgecli import events
from edgecli.config import FunctionConfig
from edgecli.host.connection import BootError
from edgecli.host.supervisor import Supervisor
from edgecli.host.worker import State, Worker

PER_WORKER_CONCURRENCY = 64  # requests one per_worker worker takes at once before another is started
PER_REQUEST_LINGER = 2.0  # seconds an idle per_request worker with no tasks stays for reuse
TRANSIENT_RETRY_S = 1.0  # after a spawn failed for want of a fork server, the next request tries again


class NoWorkerAvailable(Exception):
    """No worker became free within request_wait_timeout_ms (504)."""


class Pool:
    concurrency = PER_WORKER_CONCURRENCY
    # per_worker boots one worker at a time (more only when the warm ones are saturated); a pool whose
    # workers each take one request boots in parallel, up to max_parallelism.
    parallel_boots = False

    def __init__(self, function: FunctionConfig, supervisor: Supervisor) -> None:
        self.function = function
        self.supervisor = supervisor
        self.generation = 0
        self.workers: list[Worker] = []  # ready and accepting requests
        self.booting = 0
        self.broken: BootError | None = None
        self._queue: deque[asyncio.Event] = deque()  # requests waiting for a worker, in arrival order
        self._spawns: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.function.name

    # -- the relay's side ------------------------------------------------------------------------------

    async def acquire(self) -> Worker:
        """A worker for one more request. First come, first served: while requests are queued, only the
        one at the head may take a worker, so a newcomer never overtakes a request already waiting."""
        if self.broken is not None:
            raise self.broken
        if not self._queue:
            worker = self.pick()
            if worker is not None:
                return worker
        loop = asyncio.get_running_loop()
        me = asyncio.Event()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            me.set()

        # One timer for the whole wait, not a wait_for (a task and a timer) per wake-up: a oneshot
        # request is woken several times before its turn comes.
        timer = loop.call_later(self.function.limits.request_wait_timeout_ms / 1000, expire)
        self._queue.append(me)
        try:
            while True:
                if self.broken is not None:
                    raise self.broken
                if self._queue[0] is me:
                    worker = self.pick()
                    if worker is not None:
                        return worker
                if self.can_spawn():
                    self.spawn()
                if expired:
                    raise NoWorkerAvailable(self.name)
                me.clear()
                await me.wait()
        finally:
            timer.cancel()
            self._queue.remove(me)
            self.wake()  # the next in line may take the next free slot

    def pick(self) -> Worker | None:
        best: Worker | None = None
        for worker in self.workers:
            load = worker.load
            if load < self.concurrency and (best is None or load < best.load):
                best = worker
        return best

    def release(self, worker: Worker) -> None:
        self.wake()

    # -- spawning --------------------------------------------------------------------------------------

    def live_count(self) -> int:
        return len(self.workers) + self.booting

    def can_spawn(self) -> bool:
        if self.booting and not self.parallel_boots:
            return False
        return self.live_count() < self.function.limits.parallelism

    def spawn(self) -> None:
        self.booting += 1
        task = asyncio.get_running_loop().create_task(self._spawn(self.generation))
        self._spawns.add(task)
        task.add_done_callback(self._spawns.discard)

    async def _spawn(self, generation: int) -> None:
        try:
            worker = await self.supervisor.spawn(self.function, generation, self)
        except BootError as exc:
            if generation == self.generation:
                self.broken = exc
                if exc.transient:  # the fork server is down, not the function: look again shortly
                    asyncio.get_running_loop().call_later(TRANSIENT_RETRY_S, self._forget, exc)
            return
        finally:
            self.booting -= 1
            self.wake()
        if generation != self.generation or worker.state is not State.READY:
            self.supervisor.retire(worker, "reload")  # booted old code: a reload happened meanwhile
            return
        self.add(worker)
        self.wake()

    def _forget(self, failure: BootError) -> None:
        if self.broken is failure:
            self.broken = None
            self.wake()

    def add(self, worker: Worker) -> None:
        self.workers.append(worker)

    async def warm(self, workers: int = 1) -> None:
        """Boot `workers` workers now (at most max_parallelism), so the first requests are fast and boot
        errors show at startup."""
        for _ in range(min(workers, self.function.limits.parallelism) - self.live_count()):
            self.spawn()
        await self.settle()

    async def settle(self) -> None:
        if self._spawns:
            await asyncio.wait(list(self._spawns))

    def wake(self) -> None:
        """Something changed (a slot, a worker, the broken state): the head of the queue looks again."""
        if self._queue:
            self._queue[0].set()

    # -- the supervisor's side -------------------------------------------------------------------------

    def on_retired(self, worker: Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        self.wake()

    def on_gone(self, worker: Worker) -> None:
        self.on_retired(worker)

    # -- reload and close ------------------------------------------------------------------------------

    def reload(self, function: FunctionConfig) -> None:
        """New code or config: old workers drain and leave, new requests get workers of the new code."""
        self.generation += 1
        self.function = function
        self.broken = None
        self.supervisor.kill_booting(self)
        for worker in list(self.workers):
            self.supervisor.retire(worker, "reload")
        self.workers.clear()
        self.wake()

    def close(self, retire: bool = True) -> None:
        """Serve no more; with `retire`, idle workers drain and leave (serve's own shutdown drains them
        itself). Workers still importing are stopped: they hold no request, and may be stuck."""
        self.generation += 1
        self.broken = BootError(f"function {self.name} is no longer served")
        self.supervisor.kill_booting(self)
        if retire:
            for worker in list(self.workers):
                self.supervisor.retire(worker, "removed")
            self.workers.clear()
        self.wake()


class PerWorkerPool(Pool):
    pass


class PerRequestPool(Pool):
    concurrency = 1
    parallel_boots = True

    def __init__(self, function: FunctionConfig, supervisor: Supervisor) -> None:
        super().__init__(function, supervisor)
        self.idle_since: dict[Worker, float] = {}
        self.unused: set[Worker] = set()  # booted, not yet handed a request
        self._sweeper = asyncio.get_running_loop().create_task(self.sweep())

    def add(self, worker: Worker) -> None:
        super().add(worker)
        self.unused.add(worker)

    def pick(self) -> Worker | None:
        worker = super().pick()
        if worker is not None:
            self.unused.discard(worker)
        return worker

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(PER_REQUEST_LINGER / 4)
            now = time.monotonic()
            for worker in list(self.workers):
                if not worker.idle or worker in self.unused:
                    self.idle_since.pop(worker, None)
                elif now - self.idle_since.setdefault(worker, now) >= PER_REQUEST_LINGER:
                    self.idle_since.pop(worker, None)
                    self.supervisor.retire(worker, "idle")

    def on_gone(self, worker: Worker) -> None:
        self.idle_since.pop(worker, None)
        self.unused.discard(worker)
        super().on_gone(worker)

    def close(self, retire: bool = True) -> None:
        self._sweeper.cancel()
        super().close(retire)


class OneshotPool(Pool):
    """Spares are booted ahead with the current code; each serves one request, then is terminated."""

    concurrency = 1
    parallel_boots = True

    def __init__(self, function: FunctionConfig, supervisor: Supervisor) -> None:
        super().__init__(function, supervisor)
        self.busy = 0  # workers handed out whose response is not done yet

    def pick(self) -> Worker | None:
        if self.busy >= self.function.limits.parallelism:
            return None
        for worker in self.workers:
            if worker.state is State.READY and not worker.load:
                self.workers.remove(worker)
                self.busy += 1
                self.refill()
                return worker
        return None

    def refill(self) -> None:
        while self.broken is None and self.can_spawn():
            self.spawn()

    def release(self, worker: Worker) -> None:
        self.busy -= 1
        self.supervisor.terminate(worker)
        self.refill()
        self.wake()

    async def warm(self, workers: int = 1) -> None:
        self.refill()  # always max_parallelism spares
        await self.settle()

    def reload(self, function: FunctionConfig) -> None:
        super().reload(function)
        self.refill()

    def on_gone(self, worker: Worker) -> None:
        super().on_gone(worker)
        if worker.cancelled_tasks:
            n = worker.cancelled_tasks
            message = (
                f"{n} background task{'s' if n != 1 else ''} of {self.name} cut off: policy "
                '"oneshot" ends the worker after the response. Set policy = "per_worker" in '
                "[edge_runtime] to let them finish."
            )
            self.supervisor.emit(events.log(message, "warning", **worker.context()))
        if self.broken is None:
            self.refill()


POOLS: dict[str, type[Pool]] = {
    "per_worker": PerWorkerPool,
    "per_request": PerRequestPool,
    "oneshot": OneshotPool,
}


def make_pool(policy: str, function: FunctionConfig, supervisor: Supervisor) -> Pool:
    return POOLS[policy](function, supervisor)
