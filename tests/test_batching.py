"""Unit tests of the pass-batching transport (serve's HTTP and frame writes): one write per loop pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edgecli.batching import PassBatchingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.calls: list[str] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def close(self) -> None:
        self.calls.append("close")

    def is_closing(self) -> bool:
        return "close" in self.calls

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


@pytest.mark.timeout(10)
def test_head_and_body_written_in_one_pass_leave_together() -> None:
    async def main() -> None:
        real = FakeTransport()
        transport = PassBatchingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(memoryview(b"body"))
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        # A chunk written in a later pass is a write of its own: nothing waits beyond its pass.
        transport.write(b"more")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"more"

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_close_and_eof_send_what_is_held_first() -> None:
    async def main() -> None:
        real = FakeTransport()
        transport = PassBatchingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"last")
        transport.close()
        assert real.writes == [b"last"] and real.calls == ["close"]
        other = FakeTransport()
        half_closed = PassBatchingTransport(other, asyncio.get_running_loop())  # type: ignore[arg-type]
        half_closed.write(b"x")
        half_closed.write_eof()
        assert other.writes == [b"x"] and other.calls == ["write_eof"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the real transport's
        await asyncio.sleep(0)
        assert len(real.writes) == 1 and len(other.writes) == 1  # the scheduled flushes find nothing left

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_bytes_held_when_the_peer_goes_are_dropped_not_raised() -> None:
    async def main() -> None:
        real = FakeTransport()
        transport = PassBatchingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"late")
        real.close()  # the connection is lost within the same pass
        await asyncio.sleep(0)
        assert real.writes == []

    asyncio.run(main())
