"""The limits, applied: every MONITOR_INTERVAL, each live worker's process tree is sampled (wall clock
since spawn, CPU since boot, resident memory) and host/limits.py's verdict carried out — retire, a
`NOTICE`, or a kill. See docs/architecture.md, "Limits"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from edgecli import events
from edgecli.events import Event
from edgecli.host import limits
from edgecli.host.worker import State, Worker

MONITOR_INTERVAL = 0.05
NOTICE_GRACE = 0.1  # seconds between a late beforeunload notice and the limit kill


class LimitEnforcer:
    """Watches the supervisor's workers; retiring one is the supervisor's verb, so it is passed in."""

    def __init__(
        self,
        workers: Mapping[str, Worker],
        emit: Callable[[Event], None],
        retire: Callable[[Worker, str], None],
    ) -> None:
        self.workers = workers  # the supervisor's own table, read live
        self.emit = emit
        self.retire = retire

    async def run(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                if worker.live and worker.pid is not None and worker.kill_reason is None:
                    self.check(worker, now)

    def check(self, worker: Worker, now: float) -> None:
        if not self.sample(worker):
            return
        booted = worker.state is not State.BOOTING
        sample = limits.Sample(
            wall_s=now - worker.spawned_at,
            cpu_ms=worker.cpu_ms - worker.cpu_base_ms if booted else 0.0,
            memory_mb=worker.memory_mb,
        )
        retiring = worker.state is not State.READY and booted
        verdict = limits.decide(sample, worker.limits, worker.noticed, retiring)
        if verdict.action is limits.Action.KILL:
            self.kill_for_limit(worker, verdict)
        elif verdict.action is limits.Action.NOTICE:
            worker.notice(verdict.reason)
        elif verdict.action is limits.Action.RETIRE:
            self.retire(worker, verdict.reason)

    @staticmethod
    def sample(worker: Worker) -> bool:
        """CPU time and resident memory of the worker and every process it started, still running."""
        used = worker.usage.sample() if worker.usage is not None else None
        if used is None:
            return False
        cpu_ms, worker.memory_mb = used
        # A child that ended took its CPU time with it unless waited for; never let the total shrink.
        worker.cpu_ms = max(worker.cpu_ms, cpu_ms)
        return True

    def kill_for_limit(self, worker: Worker, verdict: limits.Verdict) -> None:
        used_cpu = max(worker.cpu_ms - worker.cpu_base_ms, 0.0)
        message = (
            f"{verdict.describe()}: killing the worker; it used {used_cpu:.0f} ms CPU and "
            f"{worker.memory_mb:.0f} MB"
        )
        self.emit(events.log(message, "error", **worker.context(request=worker.sole_request())))
        worker.kill_reason = verdict.reason
        if worker.noticed:
            worker.kill(verdict.reason)
            return
        # The limit was crossed between two samples, 90 % unseen: the function still hears
        # beforeunload (if its loop is free), and is killed a moment later.
        worker.notice(verdict.reason)
        asyncio.get_running_loop().call_later(NOTICE_GRACE, worker.kill, verdict.reason)
