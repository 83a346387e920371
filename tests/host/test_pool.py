"""Unit tests of the per-policy pool state machines, with a fake supervisor (no processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgecli.config import FunctionConfig, Limits
from edgecli.host import pool as pool_module
from edgecli.host.connection import BootError
from edgecli.host.pool import NoWorkerAvailable, OneshotPool, PerRequestPool, PerWorkerPool, Pool
from edgecli.host.worker import State, Worker


class FakeSupervisor:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.spawned: list[Worker] = []
        self.retired: list[tuple[Worker, str]] = []
        self.terminated: list[Worker] = []

    async def spawn(self, function: FunctionConfig, generation: int, pool: Any) -> Worker:
        await asyncio.sleep(0.01)
        if self.fail:
            raise BootError("ImportError: nope")
        worker = Worker(
            id=f"w{len(self.spawned)}", function=function, generation=generation, conn=None, pool=pool
        )  # type: ignore[arg-type]
        worker.state = State.READY
        self.spawned.append(worker)
        return worker

    def retire(self, worker: Worker, reason: str) -> None:
        self.retired.append((worker, reason))
        worker.state = State.RETIRING
        worker.pool.on_retired(worker)

    def terminate(self, worker: Worker) -> None:
        self.terminated.append(worker)
        worker.state = State.RETIRING

    def emit(self, event: Any) -> None:
        pass

    def kill_booting(self, pool: Any) -> None:
        pass


def function(**limits: Any) -> FunctionConfig:
    base = {"max_parallelism": 2, "request_wait_timeout_ms": 300}
    return FunctionConfig(
        name="f", entrypoint=Path("x"), directory=Path("."), limits=Limits(**{**base, **limits})
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def take(pool: Pool, request: str) -> Worker:
    worker = await pool.acquire()
    worker.inflight[len(worker.inflight) + 100] = request
    return worker


@pytest.mark.timeout(10)
def test_per_worker_reuses_one_warm_worker_until_saturated() -> None:
    async def main() -> None:
        sup = FakeSupervisor()
        pool = PerWorkerPool(function(), sup)  # type: ignore[arg-type]
        pool.concurrency = 2
        a = await take(pool, "r1")
        b = await take(pool, "r2")
        assert a is b and len(sup.spawned) == 1
        c = await take(pool, "r3")  # the warm one is saturated: a second worker starts
        assert c is not a and len(sup.spawned) == 2
        a.inflight.clear()
        pool.release(a)
        assert await pool.acquire() is a  # least loaded

    run(main())


@pytest.mark.timeout(10)
def test_per_worker_waits_then_504_when_everything_is_busy() -> None:
    async def main() -> None:
        pool = PerWorkerPool(function(max_parallelism=1), FakeSupervisor())  # type: ignore[arg-type]
        pool.concurrency = 1
        await take(pool, "r1")
        with pytest.raises(NoWorkerAvailable):
            await pool.acquire()

    run(main())


@pytest.mark.timeout(10)
def test_a_waiting_request_woken_in_vain_still_gets_its_504_on_time() -> None:
    async def main() -> None:
        pool = PerWorkerPool(function(max_parallelism=1), FakeSupervisor())  # type: ignore[arg-type]
        pool.concurrency = 1
        await take(pool, "r1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.ensure_future(pool.acquire())
        while not waiting.done():  # wake-ups that free nothing: the request looks, and waits again
            pool.wake()
            await asyncio.sleep(0.02)
        with pytest.raises(NoWorkerAvailable):
            waiting.result()
        # request_wait_timeout_ms = 300: not before it, and not put off by each wake-up (they come every
        # 20 ms: a timer started again at each would never fire). The upper bound leaves room for load.
        assert 0.25 <= loop.time() - started < 5.0
        assert not pool._queue

    run(main())


@pytest.mark.timeout(10)
def test_a_waiting_request_gets_the_worker_released_meanwhile() -> None:
    async def main() -> None:
        pool = PerRequestPool(function(max_parallelism=1), FakeSupervisor())  # type: ignore[arg-type]
        worker = await take(pool, "r1")
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        worker.inflight.clear()
        pool.release(worker)
        assert await waiting is worker
        pool.close()

    run(main())


@pytest.mark.timeout(10)
def test_per_request_keeps_a_warm_worker_until_its_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "PER_REQUEST_LINGER", 0.04)

    async def main() -> None:
        sup = FakeSupervisor()
        pool = PerRequestPool(function(), sup)  # type: ignore[arg-type]
        await pool.warm()
        warm = sup.spawned[0]
        swept = pool_module.PER_REQUEST_LINGER * 5
        await asyncio.sleep(swept)  # several sweeps: the warm worker has served nothing, so it stays
        assert sup.retired == []
        worker = await take(pool, "r1")
        assert worker is warm
        worker.inflight.clear()
        pool.release(worker)
        deadline = asyncio.get_running_loop().time() + 5
        while not sup.retired and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert sup.retired == [(warm, "idle")]  # once it has served, it lingers and leaves
        pool.close()

    run(main())


@pytest.mark.timeout(10)
def test_boot_error_marks_the_pool_broken_without_respawning() -> None:
    async def main() -> None:
        sup = FakeSupervisor(fail=True)
        pool = PerWorkerPool(function(), sup)  # type: ignore[arg-type]
        for _ in range(3):
            with pytest.raises(BootError):
                await pool.acquire()
        assert pool.booting == 0 and pool.broken is not None
        pool.reload(function())  # a reload clears it
        assert pool.broken is None

    run(main())


@pytest.mark.timeout(10)
def test_a_transient_spawn_failure_is_tried_again_without_a_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    # No fork server to start a worker: nothing is wrong with the function, so the pool looks again
    # after a moment instead of staying broken until the files change.
    monkeypatch.setattr(pool_module, "TRANSIENT_RETRY_S", 0.05)

    class FlakySupervisor(FakeSupervisor):
        async def spawn(self, function: FunctionConfig, generation: int, pool: Any) -> Worker:
            if self.fail:
                self.fail = False
                raise BootError("cannot start a worker: the fork server is not running", transient=True)
            return await super().spawn(function, generation, pool)

    async def main() -> None:
        pool = PerWorkerPool(function(), FlakySupervisor(fail=True))  # type: ignore[arg-type]
        with pytest.raises(BootError):
            await pool.acquire()
        assert pool.broken is not None
        await asyncio.sleep(0.1)
        assert pool.broken is None
        assert (await pool.acquire()).id == "w0"

    run(main())


@pytest.mark.timeout(10)
def test_retired_worker_takes_no_new_requests_and_reload_retires_old_generation() -> None:
    async def main() -> None:
        sup = FakeSupervisor()
        pool = PerWorkerPool(function(), sup)  # type: ignore[arg-type]
        old = await take(pool, "r1")
        pool.reload(function())
        assert sup.retired == [(old, "reload")]
        new = await take(pool, "r2")
        assert new is not old and new.generation == 1

    run(main())


@pytest.mark.timeout(10)
def test_oneshot_hands_out_spares_and_terminates_after_the_response() -> None:
    async def main() -> None:
        sup = FakeSupervisor()
        pool = OneshotPool(function(max_parallelism=2), sup)  # type: ignore[arg-type]
        await pool.warm()
        assert len(pool.workers) == 2  # spares booted ahead
        a = await take(pool, "r1")
        b = await take(pool, "r2")
        assert a is not b and pool.busy == 2
        pool.release(a)
        assert sup.terminated == [a] and pool.busy == 1
        await pool.settle()
        c = await take(pool, "r3")
        assert c not in (a, b)

    run(main())
