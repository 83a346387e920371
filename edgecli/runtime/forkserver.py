"""The fork server: a pre-imported, single-threaded template process that forks workers on request.

Spawning a fresh Python that imports Starlette costs ~100 ms; forking this process costs ~2 ms, after
which the child only imports the user's module. The fork server never starts a thread or an event loop,
so forking it is safe.

Protocol with the host, over a SOCK_SEQPACKET socket (one JSON message per packet):
  host → server: a WorkerSpec, with three fds attached (worker socket, stdout pipe, stderr pipe)
  server → host: {"spawned": worker_id, "pid": pid} | {"exited": pid, "code": exit code or -signal}
Host gone (EOF) → the server exits, and every worker dies with it (parent-death signal).
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

# Everything a worker needs before the user's module, imported once here and shared by every fork.
import starlette.applications
import starlette.requests
import starlette.responses
import starlette.routing  # noqa: F401

from edgecli.runtime import deno_child
from edgecli.runtime import worker as worker_mod
from edgecli.runtime.parent import die_with_parent

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


def spawn(ctl: socket.socket, wakeup: tuple[int, int], payload: bytes, fds: list[int]) -> None:
    spec = worker_mod.WorkerSpec(**json.loads(payload))
    server_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Child: forget the server's plumbing, then become the worker.
        ctl.close()
        for fd in wakeup:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        die_with_parent(server_pid)
        if spec.argv:
            deno_child.exec_worker(spec, *fds)
        worker_mod.child_main(spec, *fds)
    for fd in fds:
        os.close(fd)
    ctl.send(json.dumps({"spawned": spec.worker, "pid": pid}).encode())


def reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ctl.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def serve(ctl: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd sees SIGCHLD
    # Ctrl-C, and the SIGTERM that `timeout`, systemd or docker send, reach the whole process group. The
    # host decides how workers stop (drain, then beforeunload); the server and its workers (which
    # inherit these) ignore both and die with the host through the parent-death signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # keep the imported objects out of GC passes in children: fewer copied pages
    while True:
        readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            reap(ctl)
        if ctl.fileno() in readable:
            payload, fds = receive(ctl)
            if not payload:
                return  # the host is gone
            spawn(ctl, (wake_r, wake_w), payload, fds)


def main() -> None:
    die_with_parent(int(sys.argv[2]))
    ctl = socket.socket(fileno=int(sys.argv[1]))
    ctl.setblocking(True)
    try:
        serve(ctl)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
