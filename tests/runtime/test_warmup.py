"""The fork server's warm-up: it runs the worker's request path and leaves nothing behind to fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

# In a fresh interpreter: the warm-up changes interpreter-wide state (that is its point), and the check
# is about what the fork server's process looks like after it.
CHECK = textwrap.dedent(
    """
    import asyncio, sys, threading
    from edgecli.runtime import report
    from edgecli.runtime.api import served
    from edgecli.runtime.warmup import ROUNDS, warm_up

    stdout, reporter = sys.stdout, report.reporter
    assert warm_up() == ROUNDS, "every warm-up request gets its 200"
    assert threading.active_count() == 1, threading.enumerate()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise AssertionError("a loop is still running")
    assert asyncio.get_event_loop_policy()._local._loop is None, "no loop is left set"
    assert served.target is None and report.reporter is reporter and sys.stdout is stdout
    print("ok")
    """
)


def test_warm_up_serves_its_requests_and_leaves_no_thread_loop_or_state() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
