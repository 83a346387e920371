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

A keeper is a fork of the fork server, and forking that pre-imported process is most of what a fresh
worker costs; so a keeper outlives its worker: with the tree torn down, it tells the fork server
`idle` on its own socket and forks the next worker it is sent. The fork server keeps a few idle.
"""

from __future__ import annotations

import array
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
IDLE = b"idle"  # keeper → fork server: the last worker's tree is gone, send the next
MAX_PACKET = 1 << 20
FDS_PER_SPAWN = 4

# In the worker's process: its spec and fds, and its keeper's pid.
Start = Callable[[bytes, list[int], int], NoReturn]


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One packet and the fds attached to it (b"" at EOF)."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(FDS_PER_SPAWN * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


class Keeper:
    def __init__(self, ctl: socket.socket, jobs: socket.socket, server: int, wake: tuple[int, int]) -> None:
        self.ctl = ctl  # shared with the fork server: reports to serve
        self.jobs = jobs  # the fork server's workers for this keeper, one at a time; IDLE goes back
        self.server = server
        self.wake = wake  # the pipe signals wake this process's loop through
        self.wake_r = wake[0]
        self.leaving = False  # the fork server is gone or asked for the teardown
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

    def woken(self) -> None:
        """A signal arrived: reap, and see whether it is time to leave."""
        if TEARDOWN.to_bytes(1, "little") in os.read(self.wake_r, 4096):
            self.leaving = True
        self.reap()
        if os.getppid() != self.server:
            self.leaving = True

    def next_job(self) -> tuple[bytes, list[int]] | None:
        """Wait for the next worker to fork; None when it is time to leave (or the fork server says so)."""
        while not self.leaving:
            readable, _, _ = select.select([self.jobs.fileno(), self.wake_r], [], [])
            if self.wake_r in readable:
                self.woken()
            elif self.jobs.fileno() in readable:
                payload, fds = receive(self.jobs)
                return (payload, fds) if payload else None
        return None

    def run(self, payload: bytes, fds: list[int], start: Start) -> None:
        """Fork one worker, report it, keep it until it ends (or it is time to leave), clear its tree."""
        me = os.getpid()
        self.code = None
        self.worker = os.fork()
        if self.worker == 0:
            self.ctl.close()
            self.jobs.close()
            signal.set_wakeup_fd(-1)
            for fd in self.wake:
                os.close(fd)
            parent.set_name(WORKER_NAME)
            start(payload, fds, me)
        try:
            os.setpgid(self.worker, self.worker)  # here too: the group exists before serve may kill it
        except OSError:
            pass
        for fd in fds:  # the worker's socket and pipes are the worker's alone: serve sees their EOF
            os.close(fd)
        self.report({"spawned": json.loads(payload)["worker"], "pid": self.worker})
        while self.code is None and not self.leaving:
            select.select([self.wake_r], [], [])
            self.woken()
        if self.code is not None:  # serve learns of the exit first; what the worker left goes next
            self.report({"exited": self.worker, "code": self.code})
        self.teardown()
        if self.code is None:
            self.reap()
            if self.code is not None:
                self.report({"exited": self.worker, "code": self.code})

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


WORKER_NAME = parent.get_name()  # the fork server's: a worker goes back to it


def keep(
    ctl: socket.socket,
    jobs: socket.socket,
    server: int,
    server_wakeup: tuple[int, int],
    start: Start,
) -> NoReturn:
    """Run in the fork server's fresh child: fork each worker sent on `jobs`, keep it, ask for the next."""
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
        keeper = Keeper(ctl, jobs, server, (wake_r, wake_w))
        while (job := keeper.next_job()) is not None:
            keeper.run(*job, start)
            if keeper.leaving:
                break
            try:
                jobs.send(IDLE)
            except OSError:
                break
        keeper.teardown()
        code = 0
    finally:
        os._exit(code)
