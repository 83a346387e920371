"""The fork server: a pre-imported, single-threaded template process that forks workers on request.

Spawning a fresh Python that imports Starlette costs ~100 ms; forking this process costs ~2 ms, after
which the child only imports the user's module. The fork server never starts a thread or an event loop,
so forking it is safe.

Protocol with the host, over a SOCK_SEQPACKET socket (one JSON message per packet):
  host → server: a WorkerSpec, with three fds attached (worker socket, stdout pipe, stderr pipe)
  server → host: {"spawned": worker_id, "pid": pid} | {"exited": pid, "code": exit code or -signal}
Host gone (EOF, or the parent-death signal) → the server kills every worker's process group and the
orphans re-parented to it, then exits; a worker dies with the server too (its own parent-death signal).

The process tree: each worker leads its own process group (what it starts goes with it, and a Ctrl-C at
the terminal reaches serve, not the functions) and is a subreaper (a daemonising grandchild stays
under it). The server is a subreaper as well: when a worker exits, its group is killed and so is
anything re-parented here.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import time

# Everything a worker needs before the user's module, imported once here and shared by every fork.
import starlette.applications
import starlette.requests
import starlette.responses
import starlette.routing  # noqa: F401

from edgecli.runtime import deno_child, parent
from edgecli.runtime import worker as worker_mod

try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - optional
    pass

MAX_PACKET = 1 << 20
FDS_PER_SPAWN = 3


def receive(ctl: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = ctl.recvmsg(MAX_PACKET, socket.CMSG_SPACE(FDS_PER_SPAWN * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def spawn(
    ctl: socket.socket, wakeup: tuple[int, int], payload: bytes, fds: list[int], workers: set[int]
) -> None:
    spec = worker_mod.WorkerSpec(**json.loads(payload))
    server_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Child: forget the server's plumbing, then become the worker, with a fresh Python's signals.
        ctl.close()
        for fd in wakeup:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        parent.restore_signals()
        os.setpgid(0, 0)
        parent.become_subreaper()
        parent.die_with_parent(server_pid)
        if spec.argv:
            deno_child.exec_worker(spec, *fds)
        worker_mod.child_main(spec, *fds)
    try:
        os.setpgid(pid, pid)  # also here, so the group exists before the server may need to kill it
    except OSError:
        pass
    workers.add(pid)
    for fd in fds:
        os.close(fd)
    ctl.send(json.dumps({"spawned": spec.worker, "pid": pid}).encode())


def reap(ctl: socket.socket, workers: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in workers:
            workers.discard(pid)
            parent.kill_group(pid)  # what the worker started goes with it
            ctl.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())
    # Anything else that is our child was re-parented here when its worker died: it goes too.
    for pid in parent.children():
        if pid not in workers:
            parent.kill(pid)


def kill_everything(workers: set[int], timeout: float = 2.0) -> None:
    """The host is gone: every worker, everything each started, and every orphan re-parented here."""
    for pid in workers:
        parent.kill_group(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = parent.children()
        if not alive:
            return
        for pid in alive:
            parent.kill_group(pid)
            parent.kill(pid)
        while True:  # reap, so that a killed worker's orphans are re-parented here and seen next pass
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.005)


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
    parent.become_subreaper()
    gc.collect()
    gc.freeze()  # keep the imported objects out of GC passes in children: fewer copied pages
    workers: set[int] = set()
    try:
        loop(ctl, host, (wake_r, wake_w), workers)
    finally:
        kill_everything(workers)


def loop(ctl: socket.socket, host: int, wakeup: tuple[int, int], workers: set[int]) -> None:
    wake_r = wakeup[0]
    while True:
        readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            if os.getppid() != host:
                return  # the host died without closing the socket first (SIGKILL)
            reap(ctl, workers)
        if ctl.fileno() in readable:
            payload, fds = receive(ctl)
            if not payload:
                return  # the host is gone
            spawn(ctl, wakeup, payload, fds, workers)


def main() -> None:
    host = int(sys.argv[2])
    parent.die_with_parent(host, signal.SIGTERM)  # caught: the server kills its workers' trees first
    ctl = socket.socket(fileno=int(sys.argv[1]))
    ctl.setblocking(True)
    try:
        serve(ctl, host)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
