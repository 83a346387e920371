"""One `edgecli serve` subprocess for tests: start it, feed its output to an EventLog, stop it, and make
sure that it and everything it started are gone.

serve runs in a session of its own, so a Ctrl-C at the terminal reaches pytest alone, which then stops
serve in order; on Linux serve is also killed if the process that started it dies without stopping it.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from edgecli.testing.records import EventLog

LEFTOVER_WAIT_S = 5.0


class ServeProcess:
    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], err_path: Path, log: EventLog) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.err_path = err_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._err: IO[bytes] | None = None
        self._seen: set[int] = set()  # pids of serve's family, as last looked at

    def start(self) -> None:
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_us(),
        )
        _live.add(self)
        self._reader = threading.Thread(target=self._read, name="edgecli-serve-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.log.feed(line.decode("utf-8", errors="replace"))
        finally:
            self.log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exit_status(self) -> int | None:
        if self.proc is None:
            return None
        status = self.proc.poll()
        if status is None and _dead(self.proc.pid):
            # poll() answers None while another thread holds the Popen's wait lock; a process the kernel
            # already holds as a zombie has exited, and waiting for it returns at once.
            status = self.proc.wait(LEFTOVER_WAIT_S)
        return status

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float, *, exited: bool = False) -> None:
        """SIGTERM (serve drains, then exits), SIGKILL after `timeout`; AssertionError if anything is left,
        or if serve had exited by itself (unless `exited` says that is known) or failed to stop."""
        if self.proc is None:
            return
        self._family()
        problems: list[str] = []
        if self.exit_status() is not None:
            if not exited:
                problems.append(f"edgecli serve had exited by itself, with status {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                if self.proc.wait(timeout) != 0:
                    problems.append(f"edgecli serve exited with status {self.proc.returncode} on SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append(f"edgecli serve did not exit within {timeout:g} s of SIGTERM; killed it")
                self.kill()
        if self._reader is not None:
            self._reader.join(LEFTOVER_WAIT_S)
        if self._err is not None:
            self._err.close()
        _live.discard(self)
        left = self._leftovers()
        if left:
            problems.append("processes left behind (killed now): " + "; ".join(left))
        if problems:
            raise AssertionError(f"{'. '.join(problems)}.\n--- serve's stderr ---\n{self.stderr()[-3000:]}")

    def kill(self) -> None:
        """Everything at once, now: for a server that cannot be stopped in order."""
        for proc in self._family():
            try:
                proc.kill()
            except psutil.Error:
                pass
        if self.proc is not None:
            self.proc.wait(LEFTOVER_WAIT_S)

    def remember_family(self) -> None:
        """Note serve's processes now (once it is ready): if serve dies, they are checked all the same."""
        self._family()

    def _family(self) -> list[psutil.Process]:
        """serve and every live process under it; remembered, so the leftover check knows them all."""
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        self._seen.update(p.pid for p in family)
        return family

    def _leftovers(self) -> list[str]:
        """Describe (and kill) what is still alive of serve's family once serve has exited."""
        assert self.proc is not None
        self._seen.discard(self.proc.pid)
        left = alive(self._seen)
        if left:
            psutil.wait_procs(left, timeout=LEFTOVER_WAIT_S)
            left = alive(self._seen)
        described = []
        for proc in left:
            try:
                described.append(f"pid {proc.pid} ({' '.join(proc.cmdline())[:200]})")
                proc.kill()
            except psutil.Error:
                pass
        return described


def alive(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes among `pids` that still run (a zombie has exited: it only waits to be reaped)."""
    running = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
        except psutil.Error:
            pass
    return running


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _die_with_us() -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGKILL serve when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    from edgecli.runtime.parent import die_with_parent

    parent = os.getpid()
    return lambda: die_with_parent(parent)


_live: set[ServeProcess] = set()


@atexit.register
def _kill_live() -> None:
    """A server nobody stopped (a script that never left its `with`) does not outlive the interpreter."""
    for server in list(_live):
        server.kill()
        print(f"edgecli.testing: killed a server that was never stopped: {server.cmd}", file=sys.stderr)
