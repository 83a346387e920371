"""The fork server: a pre-imported, single-threaded template process that forks workers on request.

Spawning a fresh Python that imports Starlette costs ~100 ms; forking this process costs ~2 ms, after
which the child only imports the user's module. The fork server never starts a thread or an event loop,
so forking it is safe.

Protocol with the host, over a SOCK_SEQPACKET socket (one JSON message per packet):
  host → server: a WorkerSpec, with four fds attached (worker socket, stdout pipe, stderr pipe, and the
  socket serve lends client connections over)
  → host: {"spawned": worker_id, "pid": pid} | {"exited": pid, "code": exit code or -signal}, both sent
  by the worker's keeper (runtime/keeper.py), which shares the socket.
Host gone (EOF, or the parent-death signal) → the server tells every keeper to kill its worker's tree,
kills whatever is left, then exits.

The process tree (docs/architecture.md, "The process tree"): server → one keeper per worker → the
worker. A keeper takes the next worker once its last one's tree is gone, so a fresh worker still
costs one fork; up to SPARE_KEEPERS idle keepers wait for work. Each worker leads its own process
group (a Ctrl-C at the terminal reaches serve, not the functions); its keeper is a subreaper that owns
everything the worker starts. The server is a subreaper too: a keeper killed outright leaves its
orphans here, and they are killed.
"""

from __future__ import annotations

import array
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import NoReturn

# Everything a worker needs before the user's module, imported once here and shared by every fork.
import starlette.applications
import starlette.requests
import starlette.responses
import starlette.routing  # noqa: F401

from edgecli.runtime import deno_child, keeper, parent
from edgecli.runtime import worker as worker_mod

try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - optional
    pass

SPARE_KEEPERS = 4  # idle keepers kept for the next workers; one more idle is told to leave


class Keepers:
    """This server's keepers (runtime/keeper.py): each one's job socket, and which are idle."""

    def __init__(self, ctl: socket.socket, wakeup: tuple[int, int]) -> None:
        self.ctl = ctl
        self.wakeup = wakeup
        self.pids: set[int] = set()  # every keeper not yet reaped
        self.jobs: dict[int, socket.socket] = {}  # pid → job socket, for the keepers that take work
        self.idle: list[int] = []

    def spawn(self, payload: bytes, fds: list[int]) -> None:
        """Send the worker to an idle keeper, or to a new one. Its keeper reports it."""
        try:
            for _attempt in range(2):
                pid = self.idle.pop() if self.idle else self.start(fds)
                try:
                    self.jobs[pid].sendmsg(
                        [payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    )
                    return
                except OSError:  # that keeper died meanwhile: the next try starts a new one
                    self.forget(pid)
        finally:
            for fd in fds:
                os.close(fd)

    def start(self, pending: list[int]) -> int:
        """A new keeper. `pending`: the fds of the worker about to be sent, which it must not hold too
        (a socket still open in another process never reaches EOF)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            for fd in pending:
                os.close(fd)
            for sock in self.jobs.values():  # the other keepers' sockets: their EOF is theirs alone
                sock.close()
            keeper.keep(self.ctl, theirs, server, self.wakeup, become_worker)
        theirs.close()
        self.pids.add(pid)
        self.jobs[pid] = ours
        return pid

    def readable(self, pid: int) -> None:
        """A keeper's socket: its worker's tree is gone (IDLE), or the keeper is (EOF)."""
        try:
            message = self.jobs[pid].recv(64)
        except OSError:
            message = b""
        if message != keeper.IDLE or len(self.idle) >= SPARE_KEEPERS:
            self.forget(pid)  # closing its socket tells an idle keeper to leave
        else:
            self.idle.append(pid)

    def forget(self, pid: int) -> None:
        sock = self.jobs.pop(pid, None)
        if sock is not None:
            sock.close()
        if pid in self.idle:
            self.idle.remove(pid)

    def reap(self) -> None:
        """Reap the keepers that left; kill anything else that is our child."""
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.pids.discard(pid)
            self.forget(pid)
        # Re-parented here because its keeper was killed outright: its worker died with the keeper.
        for pid in parent.children():
            if pid not in self.pids:
                parent.kill(pid)

    def kill_everything(self) -> None:
        """The host is gone: each keeper kills its worker's tree; what is still here after that is killed."""
        for pid in self.pids:
            try:
                os.kill(pid, keeper.TEARDOWN)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + keeper.TEARDOWN_S + 0.5
        while parent.children():
            if time.monotonic() > deadline:
                for pid in parent.children():
                    parent.kill(pid)
                if time.monotonic() > deadline + 1.0:
                    return
            self.reap()
            time.sleep(0.002)


def become_worker(payload: bytes, fds: list[int], keeper_pid: int) -> NoReturn:
    """In the keeper's child: a fresh Python's signals, a process group of its own, then the worker."""
    spec = worker_mod.WorkerSpec(**json.loads(payload))
    parent.restore_signals()
    os.setpgid(0, 0)
    parent.die_with_parent(keeper_pid)
    if spec.argv:
        deno_child.exec_worker(spec, *fds)
    worker_mod.child_main(spec, *fds)
    raise AssertionError("child_main returned")  # pragma: no cover


def serve(ctl: socket.socket, host: int) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd sees SIGCHLD
    # Ctrl-C, and the SIGTERM that `timeout`, systemd or docker send, may reach serve's whole process
    # group. The host decides how workers stop (drain, then beforeunload), so the server ignores SIGINT;
    # SIGTERM is also its parent-death signal, so it only wakes the loop, which checks the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(keeper.TEARDOWN, lambda *_: None)  # for the keepers, which inherit it: it wakes them
    parent.become_subreaper()
    gc.collect()
    gc.freeze()  # keep the imported objects out of GC passes in children: fewer copied pages
    keepers = Keepers(ctl, (wake_r, wake_w))
    try:
        loop(ctl, host, wake_r, keepers)
    finally:
        keepers.kill_everything()


def loop(ctl: socket.socket, host: int, wake_r: int, keepers: Keepers) -> None:
    while True:
        by_fd = {sock.fileno(): pid for pid, sock in keepers.jobs.items()}
        readable, _, _ = select.select([ctl.fileno(), wake_r, *by_fd], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            if os.getppid() != host:
                return  # the host died without closing the socket first (SIGKILL)
            keepers.reap()
        for fd in readable:
            if fd in by_fd and by_fd[fd] in keepers.jobs:
                keepers.readable(by_fd[fd])
        if ctl.fileno() in readable:
            payload, fds = keeper.receive(ctl)
            if not payload:
                return  # the host is gone
            keepers.spawn(payload, fds)


def main() -> None:
    host = int(sys.argv[2])
    # What serve says every worker will want, imported before the first fork: the HTTP protocol a
    # worker runs on a connection serve lends it (edgecli/runtime/lent.py), ~50 ms once here rather
    # than in each worker at its first lent connection.
    for module in sys.argv[3:]:
        importlib.import_module(module)
    parent.die_with_parent(host, signal.SIGTERM)  # caught: the server kills its workers' trees first
    ctl = socket.socket(fileno=int(sys.argv[1]))
    ctl.setblocking(True)
    try:
        serve(ctl, host)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
