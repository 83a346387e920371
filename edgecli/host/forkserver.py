"""Host side of the fork server (see edgecli/runtime/forkserver.py for why it exists).

`ForkServer.spawn()` hands the server a worker spec and the worker's four fds and resolves with the
new pid; exits of forked workers come back through `on_exit(pid, code)`.

The server starts with the filtered host environment (host/env.py), not serve's own: a worker's
`os.environ` is replaced at fork, but `/proc/<pid>/environ` shows what the process was started with,
and host secrets must not be readable there.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from edgecli.host.env import host_env
from edgecli.runtime import parent

ExitHandler = Callable[[int, int], None]


class ForkServerGone(Exception):
    """The fork server exited; no worker can be started until serve restarts."""


class ForkServer:
    def __init__(self, on_exit: ExitHandler) -> None:
        self._on_exit = on_exit
        self._sock: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawning: dict[str, asyncio.Future[int]] = {}
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pids: set[int] = set()  # live workers, each the leader of its own process group
        self.gone = False

    def start(self, env: dict[str, str] | None = None, preload: tuple[str, ...] = ()) -> None:
        """`preload`: modules the server imports before its first fork, for every worker to share."""
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        cmd = [sys.executable, "-m", "edgecli.runtime.forkserver", str(theirs.fileno()), str(os.getpid())]
        cmd += preload
        if env is None:
            env = host_env(os.environ)
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._readable)

    def spawn(self, spec: dict[str, Any], fds: list[int]) -> asyncio.Future[int]:
        """Ask for a worker; the fds are sent (and closed here) with the spec. Resolves with its pid."""
        assert self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        if self.gone:
            for fd in fds:
                os.close(fd)
            future.set_exception(ForkServerGone("the fork server is not running"))
            return future
        self._spawning[spec["worker"]] = future
        self._outbox.append((json.dumps(spec).encode(), fds))
        self._flush()
        return future

    def _flush(self) -> None:
        assert self._sock is not None and self._loop is not None
        while self._outbox:
            payload, fds = self._outbox[0]
            try:
                self._sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            except BlockingIOError:
                # The server is busy forking; send the rest when the socket drains.
                self._loop.add_writer(self._sock.fileno(), self._writable)
                return
            except OSError:
                self._lost()
                return
            self._outbox.popleft()
            for fd in fds:
                os.close(fd)

    def _writable(self) -> None:
        assert self._sock is not None and self._loop is not None
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                packet = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                self._lost()
                return
            msg = json.loads(packet)
            if "spawned" in msg:
                future = self._spawning.pop(msg["spawned"], None)
                self._pids.add(int(msg["pid"]))
                if future is not None and not future.done():
                    future.set_result(int(msg["pid"]))
            else:
                self._pids.discard(int(msg["exited"]))
                self._on_exit(int(msg["exited"]), int(msg["code"]))

    def _lost(self) -> None:
        if self.gone:
            return
        self.gone = True
        # A server killed outright could not kill its workers' trees; their workers died with it (their
        # parent-death signal), but what they started may still run, in each worker's process group.
        for pid in self._pids:
            parent.kill_group(pid)
        self._pids.clear()
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
        for future in self._spawning.values():
            if not future.done():
                future.set_exception(ForkServerGone("the fork server exited"))
        self._spawning.clear()
        while self._outbox:
            for fd in self._outbox.popleft()[1]:
                os.close(fd)

    async def stop(self, timeout: float = 3.0) -> None:
        """Close the control socket: the server sees EOF and exits; its workers die with it."""
        self._lost()
        if self._sock is not None:
            self._sock.close()
        if self.proc is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while self.proc.poll() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
