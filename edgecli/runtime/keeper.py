"""The keeper: a small process between the fork server and one worker that owns the worker's whole tree.

Why a process of its own (see docs/architecture.md, "The process tree"): the keeper is a subreaper, so
everything the worker starts stays below it whatever it does (double forks, `setsid()`), and it runs
no user code, so it always gets to act:

- it reaps every orphan re-parented to it as soon as it ends, and never touches the worker's own
  children, which the function's `Popen.wait()` and friends are waiting for;
- when the worker ends, it reports the exit to serve, then kills what the worker left behind;
- when the fork server dies, however (its parent-death signal), or tells it to (SIGUSR1, serve is
  gone), it kills the worker and everything below it, then leaves.

It reports on the fork server's control socket, which it shares (one packet per message):
`{"spawned": id, "pid": worker pid}` once forked, `{"exited": pid, "code": c}` when the worker ended.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, NoReturn

from edgecli.runtime import parent

NAME = b"edgecli-keeper"  # its name in ps and /proc/<pid>/comm: host/usage.py finds a worker's tree by it
TEARDOWN_S = 2.0  # to kill the tree: a process in uninterruptible sleep may take a while to die
TEARDOWN = signal.SIGUSR1  # from the fork server: serve is gone, the worker and its tree go now


class Keeper:
    def __init__(self, ctl: socket.socket, server: int) -> None:
        self.ctl = ctl
        self.server = server
        self.worker = 0
        self.code: int | None = None  # the worker's exit code once reaped (negative: its signal)

    def report(self, message: dict[str, Any]) -> None:
        try:
            self.ctl.send(json.dumps(message).encode())
        except OSError:
            pass  # serve is gone: nobody is left to tell

    def reap(self) -> None:
        """Reap every child that ended: the worker (its code is kept) and orphans re-parented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.worker:
                self.code = os.waitstatus_to_exitcode(status)

    def watch(self, wake_r: int) -> None:
        """Until the worker ends, the fork server goes, or it asks for the teardown."""
        while True:
            self.reap()
            if self.code is not None or os.getppid() != self.server:
                return
            select.select([wake_r], [], [])
            if TEARDOWN.to_bytes(1, "little") in os.read(wake_r, 4096):
                return

    def teardown(self) -> None:
        """Kill everything below, again until nothing is left: a killed process's children come here."""
        deadline = time.monotonic() + TEARDOWN_S
        while time.monotonic() < deadline:
            alive = parent.children()
            if not alive:
                return
            for pid in alive:
                parent.kill(pid)
            time.sleep(0.001)
            self.reap()


def keep(
    ctl: socket.socket,
    server: int,
    worker_id: str,
    fds: list[int],
    server_wakeup: tuple[int, int],
    start: Callable[[int], NoReturn],
) -> NoReturn:
    """Run in the fork server's fresh child: fork the worker (it runs `start(keeper pid)`), keep it, leave."""
    code = 70
    try:
        for fd in server_wakeup:  # signals here must wake this loop, not the fork server's
            os.close(fd)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        parent.set_name(NAME)
        parent.become_subreaper()
        # The fork server's signal handlers stay: SIGINT ignored; SIGTERM (this parent-death signal, and
        # what `timeout` or systemd send the group), SIGCHLD and TEARDOWN only wake the loop.
        parent.die_with_parent(server, signal.SIGTERM)
        keeper = Keeper(ctl, server)
        me = os.getpid()
        keeper.worker = os.fork()
        if keeper.worker == 0:
            ctl.close()
            os.close(wake_r)
            os.close(wake_w)
            signal.set_wakeup_fd(-1)
            start(me)
        try:
            os.setpgid(keeper.worker, keeper.worker)  # here too: the group exists before serve may kill it
        except OSError:
            pass
        for fd in fds:  # the worker's socket and pipes are the worker's alone: serve sees their EOF
            os.close(fd)
        keeper.report({"spawned": worker_id, "pid": keeper.worker})
        keeper.watch(wake_r)
        ended = keeper.code is not None
        if ended:  # serve learns of the exit first; what the worker left behind goes right after
            keeper.report({"exited": keeper.worker, "code": keeper.code})
        keeper.teardown()
        if not ended and keeper.code is not None:
            keeper.report({"exited": keeper.worker, "code": keeper.code})
        code = 0
    finally:
        os._exit(code)
