"""A worker's resource limits as one pure decision: (sample, limits, state so far) → what to do now.

Wall clock counts from boot, CPU time from the end of boot, memory is the resident size; each is the
sum over the worker's whole process tree (what a function starts counts as the function's). Past 50 %
of the wall clock or the CPU soft limit, a worker retires; at 90 % of a hard limit it hears
`beforeunload`; at 100 % it is killed. See docs/architecture.md, "Limits".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgecli.config import Limits

NOTICE_AT = 0.9
RETIRE_AT_WALL_CLOCK = 0.5
UNITS = {"wall_clock": "s", "cpu": "ms", "memory": "MB"}


class Action(Enum):
    NOTHING = "nothing"
    RETIRE = "retire"
    NOTICE = "notice"
    KILL = "kill"


@dataclass(frozen=True, slots=True)
class Sample:
    """What a worker's process tree has used so far."""

    wall_s: float  # since the worker was spawned
    cpu_ms: float  # since the end of boot (0 while booting)
    memory_mb: float


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str = ""  # "wall_clock" | "cpu" | "memory"
    used: float = 0.0
    limit: float = 0.0

    def describe(self) -> str:
        unit = UNITS[self.reason]
        return f"{self.reason} limit reached ({self.used:.0f} {unit} of {self.limit:g} {unit})"


NOTHING = Verdict(Action.NOTHING)


def decide(sample: Sample, limits: Limits, noticed: bool, retiring: bool) -> Verdict:
    """The most urgent action for `sample`: a kill beats a notice, a notice beats a retirement.
    `noticed`: beforeunload was already sent; `retiring`: the worker already takes no new requests."""
    checks = (
        (
            "wall_clock",
            sample.wall_s,
            limits.wall_clock_limit_sec,
            RETIRE_AT_WALL_CLOCK * limits.wall_clock_limit_sec,
        ),
        ("cpu", sample.cpu_ms, limits.cpu_time_hard_limit_ms, limits.cpu_time_soft_limit_ms),
        ("memory", sample.memory_mb, limits.memory_limit_mb, 0),
    )
    notice = retire = NOTHING
    for reason, used, hard, soft in checks:
        if hard and used >= hard:
            return Verdict(Action.KILL, reason, used, hard)
        if hard and used >= NOTICE_AT * hard and not noticed and notice is NOTHING:
            notice = Verdict(Action.NOTICE, reason, used, hard)
        if soft and used >= soft and not retiring and retire is NOTHING:
            retire = Verdict(Action.RETIRE, reason, used, soft)
    return notice if notice is not NOTHING else retire
