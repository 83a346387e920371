"""`GET /_internal/health` under `serve --prod`: what a container platform's probes ask.

Ready (200) once every served function has booted a worker; before that, or while a function cannot
boot, 503 naming the functions that are not ready. The probe is answered by serve itself, never by a
worker, and is not recorded as a request: a platform asks every few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from edgecli.events import Event
from edgecli.host.pool import Pool

HEALTH_PATH = "/_internal/health"


class Health:
    """An EventSink that remembers which functions have booted; `answer()` reads the pools' state too."""

    def __init__(self, pools: Mapping[str, Pool]) -> None:
        self.pools = pools
        self.booted: set[str] = set()

    def emit(self, event: Event) -> None:
        if event.kind == "boot" and event.function is not None:
            self.booted.add(event.function)

    def failing(self) -> dict[str, str]:
        """Function name → why it is not ready: `booting`, or `boot_error` (its traceback is in the log;
        it is not repeated here, where anyone who can reach the port could read it)."""
        failing: dict[str, str] = {}
        for name, pool in self.pools.items():
            if pool.broken is not None:
                failing[name] = "unavailable" if pool.broken.transient else "boot_error"
            elif name not in self.booted:
                failing[name] = "booting"
        return failing

    def answer(self) -> tuple[int, bytes]:
        failing = self.failing()
        if failing:
            return 503, json.dumps({"status": "unavailable", "failing": failing}).encode()
        return 200, json.dumps({"status": "ok", "functions": sorted(self.pools)}).encode()
