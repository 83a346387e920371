"""Unit tests of the limits decision: samples in, an action out, no process anywhere."""

from __future__ import annotations

import pytest

from edgecli.config import Limits
from edgecli.host.limits import Action, Sample, decide

LIMITS = Limits(
    wall_clock_limit_sec=10, cpu_time_soft_limit_ms=200, cpu_time_hard_limit_ms=1000, memory_limit_mb=100
)


def act(wall: float = 0, cpu: float = 0, mb: float = 0, noticed: bool = False, retiring: bool = False) -> str:
    verdict = decide(Sample(wall, cpu, mb), LIMITS, noticed, retiring)
    return f"{verdict.action.value} {verdict.reason}".strip()


@pytest.mark.timeout(5)
def test_nothing_below_every_threshold() -> None:
    assert act(wall=4.9, cpu=199, mb=89) == "nothing"


@pytest.mark.timeout(5)
def test_half_the_wall_clock_or_the_cpu_soft_limit_retires() -> None:
    assert act(wall=5) == "retire wall_clock"
    assert act(cpu=200) == "retire cpu"
    assert act(cpu=200, retiring=True) == "nothing", "a retiring worker is not retired again"


@pytest.mark.timeout(5)
def test_ninety_percent_of_a_hard_limit_notices_once_before_retiring() -> None:
    assert act(mb=90) == "notice memory"
    assert act(cpu=900) == "notice cpu", "the notice comes before the soft limit's retirement"
    assert act(cpu=900, noticed=True) == "retire cpu"
    assert act(mb=95, noticed=True, retiring=True) == "nothing"


@pytest.mark.timeout(5)
def test_a_hard_limit_kills_whatever_came_before() -> None:
    assert act(wall=10, noticed=True, retiring=True) == "kill wall_clock"
    assert act(cpu=1000) == "kill cpu"
    assert act(mb=100, cpu=950) == "kill memory", "a kill beats another limit's notice"
    verdict = decide(Sample(0, 1500, 0), LIMITS, False, False)
    assert (verdict.used, verdict.limit) == (1500, 1000)
    assert verdict.describe() == "cpu limit reached (1500 ms of 1000 ms)"


@pytest.mark.timeout(5)
def test_a_zero_limit_is_no_limit() -> None:
    unlimited = Limits(
        wall_clock_limit_sec=0, cpu_time_soft_limit_ms=0, cpu_time_hard_limit_ms=0, memory_limit_mb=0
    )
    assert decide(Sample(1e6, 1e9, 1e6), unlimited, False, False).action is Action.NOTHING


@pytest.mark.timeout(5)
def test_a_soft_limit_alone_still_retires() -> None:
    soft_only = Limits(cpu_time_soft_limit_ms=100, cpu_time_hard_limit_ms=0)
    assert decide(Sample(0, 150, 0), soft_only, False, False).action is Action.RETIRE
