"""A process tree's usage, read from /proc: children found through their parents, CPU summed."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
from serving import wait_until

from edgecli.host.usage import TreeUsage, descendants

# A parent that starts a child burning CPU, then waits.
PARENT = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
    "time.sleep(60)\n"
)


@pytest.mark.timeout(30)
def test_the_tree_includes_a_child_and_its_cpu() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        (child,) = wait_until(lambda: descendants(parent.pid), what="the child")
        usage = TreeUsage(parent.pid)
        own = psutil.Process(parent.pid).cpu_times()
        wait_until(lambda: (s := usage.sample()) is not None and s[0] > (own.user + own.system) * 1000 + 200)
        assert descendants(child) == []
    finally:
        for pid in [*descendants(parent.pid), parent.pid]:
            psutil.Process(pid).kill()
        parent.wait(10)
    wait_until(lambda: usage.sample() is None, what="the tree to be gone")
    wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie")


@pytest.mark.timeout(10)
def test_a_pid_that_is_gone_has_no_tree() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(10)
    assert descendants(done.pid) == [] and TreeUsage(done.pid).sample() is None
