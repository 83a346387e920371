"""The fork server: a pre-imported, single-threaded template process that forks workers on request.

Spawning a fresh Python that imports Starlette costs ~100 ms; forking this process costs ~2 ms, after
which the child only imports the user's module. The fork server never starts a thread or an event loop,
so forking it is safe.

Protocol with the host, over a SOCK_SEQPACKET socket (one JSON message per packet):
  host → server: a WorkerSpec, with three fds attached (worker socket, stdout pipe, stderr pipe)
  → host: {"spawned": worker_id, "pid": pid} | {"exited": pid, "code": exit code or -signal}, both sent
  by the worker's keeper (runtime/keeper.py), which shares the socket.
Host gone (EOF, or the parent-death signal) → the server tells every keeper to kill its worker's tree,
kills whatever is left, then exits.

The process tree (docs/architecture.md, "The process tree"): server → one keeper per worker → the
worker. Each worker leads its own process group (a Ctrl-C at the terminal reaches serve, not the
functions); its keeper is a subreaper that owns everything the worker starts. The server is a subreaper
too: a keeper killed outright leaves its orphans here, and they are killed.
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
    ctl: socket.socket, wakeup: tuple[int, int], payload: bytes, fds: list[int], keepers: set[int]
) -> None:
    """Fork a keeper, which forks the worker and reports it (runtime/keeper.py)."""
    spec = worker_mod.WorkerSpec(**json.loads(payload))
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        keeper.keep(
            ctl, server, spec.worker, fds, wakeup, lambda keeper_pid: become_worker(spec, fds, keeper_pid)
        )
    keepers.add(pid)
    for fd in fds:
        os.close(fd)


def become_worker(spec: worker_mod.WorkerSpec, fds: list[int], keeper_pid: int) -> NoReturn:
    """In the keeper's child: a fresh Python's signals, a process group of its own, then the worker."""
    parent.restore_signals()
    os.setpgid(0, 0)
    parent.die_with_parent(keeper_pid)
    if spec.argv:
        deno_child.exec_worker(spec, *fds)
    worker_mod.child_main(spec, *fds)
    raise AssertionError("child_main returned")  # pragma: no cover


def reap(keepers: set[int]) -> None:
    """Reap the keepers that left (each reported its worker); kill anything else that is our child."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        keepers.discard(pid)
    # Re-parented here because its keeper was killed outright: its worker died with the keeper.
    for pid in parent.children():
        if pid not in keepers:
            parent.kill(pid)


def kill_everything(keepers: set[int]) -> None:
    """The host is gone: each keeper kills its worker's tree; what is still here after that is killed."""
    for pid in keepers:
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
        reap(keepers)
        time.sleep(0.002)


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
    keepers: set[int] = set()
    try:
        loop(ctl, host, (wake_r, wake_w), keepers)
    finally:
        kill_everything(keepers)


def loop(ctl: socket.socket, host: int, wakeup: tuple[int, int], keepers: set[int]) -> None:
    wake_r = wakeup[0]
    while True:
        readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            if os.getppid() != host:
                return  # the host died without closing the socket first (SIGKILL)
            reap(keepers)
        if ctl.fileno() in readable:
            payload, fds = receive(ctl)
            if not payload:
                return  # the host is gone
            spawn(ctl, wakeup, payload, fds, keepers)


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
