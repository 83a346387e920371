"""ServeProcess's own guarantees, with stand-ins for serve: it stops what it started, and says so loudly
when something outlives it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from serving import wait_until

from edgecli.testing.process import ServeProcess
from edgecli.testing.records import EventLog

pytestmark = pytest.mark.timeout(60)

# Each handles SIGTERM before it says it is up, as serve does. LEAKY starts a child in a session of its
# own (so it survives a signal to this group) and exits on SIGTERM without stopping it: a server that
# leaves a process behind.
LEAKY = """\
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print(json.dumps({"kind": "boot", "request": None, "task": None, "child": child.pid}), flush=True)
time.sleep(60)
"""
TIDY = """\
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(json.dumps({"kind": "boot", "request": None, "task": None}), flush=True)
time.sleep(60)
"""


def start(tmp_path: Path, code: str) -> tuple[ServeProcess, EventLog]:
    script = tmp_path / "fake_serve.py"
    script.write_text(textwrap.dedent(code))
    log = EventLog()
    process = ServeProcess([sys.executable, str(script)], {}, tmp_path / "serve.err", log)
    process.start()
    assert log.wait(lambda: bool(log.select(kind="boot")), 30)
    return process, log


def test_a_process_left_behind_fails_loudly_and_is_killed(tmp_path: Path) -> None:
    process, log = start(tmp_path, LEAKY)
    child = log.select(kind="boot")[0]["child"]
    with pytest.raises(AssertionError, match=rf"processes left behind \(killed now\): pid {child} "):
        process.stop(timeout=20)
    wait_until(lambda: _gone(child), 10, what=f"pid {child} to be killed")


def test_a_clean_stop_is_silent_and_ends_the_output(tmp_path: Path) -> None:
    process, log = start(tmp_path, TIDY)
    process.stop(timeout=20)
    assert process.exit_status() == 0
    assert not log.wait(lambda: False, 5)  # the output has ended: nobody waits for more


def test_a_server_that_ignores_sigterm_is_killed_and_reported(tmp_path: Path) -> None:
    process, _ = start(tmp_path, TIDY.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN"))
    with pytest.raises(AssertionError, match=r"did not exit within 0\.5 s of SIGTERM; killed it"):
        process.stop(timeout=0.5)
    assert process.exit_status() is not None


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
