"""`serve --prod --workers N`: N serve processes sharing one listening socket, so one machine's cores serve.

serve's event loop is one thread: on a machine with more cores than one serve fills, a container runs N
of them, as `uvicorn --workers N` does. The parent binds the socket (a port in use is one clear error,
once) and starts N replicas, each the same `edgecli` command line with the socket's descriptor in
`EDGECLI_LISTEN_FD`; each replica is a whole serve (its own fork server, workers and health endpoint)
accepting from that one socket. The parent only relays signals and waits:

- SIGTERM or SIGINT reaches the parent alone (the replicas run in sessions of their own, so a
  terminal's Ctrl-C is not counted twice) and is passed on to every replica, which drains as serve does.
- A replica that exits while the others serve has crashed: the others are stopped too and the parent
  exits with its status, so the platform restarts the container rather than run it short of capacity.
- Replicas get a parent-death signal: if the parent is killed outright, they drain and exit.
- The replicas' stdout and stderr are pipes the parent reads, writing each line whole: a write of
  more than PIPE_BUF (4 KB) to a shared pipe (a container's log) may interleave with another's, and
  log records are often longer.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from types import FrameType
from typing import BinaryIO

ENV_LISTEN_FD = "EDGECLI_LISTEN_FD"
PR_SET_PDEATHSIG = 1
RELAY_JOIN_S = 5.0  # after the replicas exit, at most this long for what they wrote last to be relayed


def inherited_socket() -> socket.socket | None:
    """The listening socket a replica was handed by its parent, or None when serve is not a replica."""
    text = os.environ.pop(ENV_LISTEN_FD, "")  # not passed on to the fork server and its workers
    if not text.isdigit():
        return None
    return socket.socket(fileno=int(text))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _relay_lines(source: BinaryIO, fd: int, lock: threading.Lock) -> None:
    """Copy `source` to `fd` a line at a time, each line in writes no other relay's come between."""
    with source:
        broken = False
        for line in source:
            if broken:
                continue  # keep reading, so that the replica is never blocked on a full pipe
            with lock:
                try:
                    _write_all(fd, line)
                except OSError:  # the parent's stdout went away: nothing to show any more
                    broken = True


def _die_with_parent() -> None:
    # Between fork and exec in the replica. SIGTERM, not SIGKILL: the replica drains and takes its fork
    # server and workers down with it.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Replicas:
    def __init__(self, sock: socket.socket, count: int, argv: list[str]) -> None:
        self.sock = sock
        self.count = count
        self.argv = argv  # the command line each replica runs: this one
        self.procs: list[subprocess.Popen[bytes]] = []
        self.relays: list[threading.Thread] = []
        self.locks = {1: threading.Lock(), 2: threading.Lock()}  # stdout's and stderr's
        self.stopping = False

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start()
            return self._wait()
        finally:
            for relay in self.relays:
                relay.join(RELAY_JOIN_S)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()

    def _start(self) -> None:
        fd = self.sock.fileno()
        env = {**os.environ, ENV_LISTEN_FD: str(fd)}
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(self.count):
            if self.stopping:
                return
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgecli", *self.argv],
                env=env,
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            self.procs.append(proc)
            for source, out in ((proc.stdout, 1), (proc.stderr, 2)):
                assert source is not None
                relay = threading.Thread(
                    target=_relay_lines, args=(source, out, self.locks[out]), daemon=True
                )
                relay.start()
                self.relays.append(relay)

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signal(sig)

    def _signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    def _wait(self) -> int:
        """Wait for every replica; the first to exit on its own stops the others. The worst status wins."""
        status = 0
        left = list(self.procs)
        while left:
            pid, code = os.wait()  # a signal runs _forward, then the wait goes on (PEP 475)
            ended = next((p for p in left if p.pid == pid), None)
            if ended is None:
                continue
            left.remove(ended)
            ended.returncode = os.waitstatus_to_exitcode(code)
            exit_code = ended.returncode if ended.returncode >= 0 else 128 - ended.returncode
            if not self.stopping:
                message = (
                    f"edgecli: serve replica {pid} exited with status {ended.returncode}; stopping the "
                    "others, so that the container is restarted whole.\n"
                )
                with self.locks[2], contextlib.suppress(OSError):  # not inside a relayed line
                    _write_all(2, message.encode())
                self.stopping = True
                self._signal(signal.SIGTERM)
                exit_code = exit_code or 1
            status = max(status, exit_code)
        return status
