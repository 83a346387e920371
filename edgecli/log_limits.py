"""How big one log record may be, and how fast one worker may produce them.

Supabase caps a log message at 10,000 characters, and so do we. And one function flooding its output
must not take serve (which records every line) from the others: each worker's records are paced by a
`Budget`, in the worker for what it prints and in serve for what it writes to fd 1/2. Past the budget
the writer waits (as it would on a full pipe); nothing is dropped. Shared by both sides, so a record is
the same whichever way its text came. Light on purpose: workers import it.
"""

from __future__ import annotations

import time

MAX_MESSAGE = 10_000
# In units of one short record; a record costs one unit more per 1,000 characters. A handler printing
# BURST_UNITS lines at once is never slowed; a flood goes on at RATE_UNITS per second.
RATE_UNITS = 5_000
BURST_UNITS = 20_000


def truncate(message: str, size: int | None = None) -> str:
    """`message` cut to MAX_MESSAGE characters, with a marker giving the original size (`size` when only
    the start of a longer text was kept)."""
    size = len(message) if size is None else size
    if size <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}… [truncated: {size:,} characters]"


def cost(chars: int) -> float:
    return 1 + chars / 1000


class Budget:
    """A token bucket: `spend` says how long the spender should wait before going on (0: not at all)."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float = RATE_UNITS, burst: float = BURST_UNITS) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def spend(self, units: float) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate) - units
        self._at = now
        return -self._tokens / self._rate if self._tokens < 0 else 0.0
