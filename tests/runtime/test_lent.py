"""In-process: a worker's lending socket, as serve writes to it (edgecli/runtime/lent.py)."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from edgecli import ipc
from edgecli.ipc import Kind
from edgecli.runtime.lent import Lending

pytestmark = pytest.mark.timeout(10)


class FakeHost:
    def __init__(self) -> None:
        self.spec = SimpleNamespace(function="f", worker="f-1")
        self.app: Any = None
        self.lifespan: Any = None
        self.stopping = False
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def flush(self) -> None:
        pass

    def background(self, coro: Any) -> None:
        coro.close()


def test_a_lend_whose_fd_did_not_come_is_given_back_at_once() -> None:
    """Serve keeps its copy of the connection and serves it itself, rather than wait for a worker that
    has nothing to serve it with (this process ran out of descriptors)."""
    offer = {"channel": 5, "verify": False, "max_body": 0, "idle": 0, "head_timeout": 0}

    async def main() -> None:
        serve_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with serve_end, worker_end:
            host = FakeHost()
            lending = Lending(host, worker_end)
            serve_end.send(ipc.dumps(offer))  # the message alone, no SCM_RIGHTS
            lending.sock.setblocking(False)
            lending._readable()
            assert host.frames == [ipc.pack(Kind.RELEASED, 5)]
            assert lending.connections == {}

    asyncio.run(main())
