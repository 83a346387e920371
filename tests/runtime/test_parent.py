"""The process-tree helpers workers and the fork server rely on, in-process."""

from __future__ import annotations

import builtins
import signal
import subprocess
import sys
from typing import Any

import pytest

from edgecli.runtime import parent

pytestmark = pytest.mark.timeout(20)


def test_children_lists_this_process_children_with_or_without_the_kernel_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in parent.children()
        real_open = builtins.open

        def no_children_file(path: Any, *args: Any, **kwargs: Any) -> Any:
            if str(path).endswith("/children"):
                raise FileNotFoundError(path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", no_children_file)
        assert child.pid in parent.children()  # found by scanning /proc instead
    finally:
        parent.kill(child.pid)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_restore_signals_undoes_ignored_and_blocked_signals() -> None:
    code = (
        "import signal, sys\n"
        "from edgecli.runtime import parent\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGQUIT, signal.SIG_IGN)\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "parent.restore_signals()\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "assert signal.getsignal(signal.SIGPIPE) is signal.SIG_IGN  # Python's own, kept\n"
        "assert not signal.pthread_sigmask(signal.SIG_BLOCK, set())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=15)
    assert result.returncode == 0, result.stderr


def test_kill_group_of_a_gone_group_is_quiet() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    parent.kill_group(child.pid)
    assert child.wait(10) == -signal.SIGKILL
    parent.kill_group(child.pid)  # no such group any more: nothing raised
    parent.kill(child.pid)
