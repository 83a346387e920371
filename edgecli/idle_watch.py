"""The idle timeouts of the requests waiting for their response to start, kept by one timer.

One timer looks every `PERIOD` s: a loop timer per request cost more than the rest of relaying a small
one (bench/README.md), and a timeout counted in seconds needs no finer grain. Used by serve's exchange
and by a worker serving a lent connection.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class Waiting(Protocol):
    def idle(self) -> None: ...


W = TypeVar("W", bound=Waiting)


class IdleWatch(Generic[W]):
    PERIOD = 0.25

    def __init__(self) -> None:
        self.deadlines: dict[W, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, waiting: W, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.deadlines[waiting] = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_later(self.PERIOD, self.sweep)

    def remove(self, waiting: W) -> None:
        self.deadlines.pop(waiting, None)

    def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiting, deadline in list(self.deadlines.items()):
            if deadline <= now:
                del self.deadlines[waiting]
                waiting.idle()
        self._timer = loop.call_later(self.PERIOD, self.sweep) if self.deadlines else None
