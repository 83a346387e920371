"""WebSocket floods against bare uvicorn and `edgecli serve`: one side sends far more than the other takes
for a while. Under both servers nothing is lost and nothing is reordered, and edgecli's processes (serve
and the worker) hold a bounded amount of the flood, as uvicorn's does: the wire's flow control holds the
sender back, never a buffer that grows with the flood.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest
import websockets.sync.client
from differential_servers import BareUvicorn, Target, edgecli_target, project
from serving import Served, wait_until

MESSAGE = 64 * 1024
FLOOD = 800  # 50 MB: far more than the windows, queues and socket buffers (loopback TCP may take 32 MB)
BOUND_MB = 12  # what edgecli's processes may grow by while the flood is held back


class Server:
    """A target and the processes whose memory counts: uvicorn's one, or serve and its workers."""

    def __init__(
        self, target: Target, pids: Iterator[int] | None = None, served: Served | None = None
    ) -> None:
        self.target = target
        self._pids = list(pids or [])
        self.served = served

    def rss_mb(self) -> float:
        pids = set(self._pids)
        if self.served is not None:
            assert self.served.proc is not None
            pids |= {self.served.proc.pid, *self.served.worker_pids()}
        return sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20

    def state(self) -> int:
        return int(httpx.get(self.target.url("/flood/state"), timeout=10).json()["sent"])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    root = project(tmp_path_factory.mktemp("flood") / "project")
    with BareUvicorn(root) as bare, Served(root) as srv:
        assert bare.proc is not None
        yield {
            "uvicorn": Server(bare.target, iter([bare.proc.pid])),
            "edgecli": Server(edgecli_target(srv), served=srv),
        }


def settled(read: Callable[[], object], quiet: float = 0.5) -> Callable[[], bool]:
    """A condition for wait_until: true once `read()` has not changed for `quiet` s."""
    last = {"value": object(), "since": time.monotonic()}

    def condition() -> bool:
        now = read()
        if now != last["value"]:
            last.update(value=now, since=time.monotonic())
            return False
        return time.monotonic() - float(last["since"]) >= quiet  # type: ignore[arg-type]

    return condition


def numbered(i: int) -> bytes:
    return i.to_bytes(4, "big") * (MESSAGE // 4)


def flood_a_slow_app(server: Server) -> tuple[dict[str, object], float]:
    """The client sends FLOOD messages to an app that reads none until told to: (what the app got, how
    many MB the server grew by meanwhile)."""
    sent = [0]
    with websockets.sync.client.connect(
        server.target.ws_url("/flood/app"), max_size=None, compression=None
    ) as ws:
        before = server.rss_mb()

        def flood() -> None:
            for i in range(FLOOD):
                ws.send(numbered(i))
                sent[0] = i + 1

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        wait_until(settled(lambda: sent[0]), 30, what="the flood to be held back")
        grown = server.rss_mb() - before
        held_back = sent[0] < FLOOD
        httpx.get(server.target.url("/flood/go"), timeout=10)
        sender.join(60)
        assert not sender.is_alive(), "the client could not send its flood once the app read"
        ws.send("end")
        count, digest = str(ws.recv(timeout=30)).split()
    expected = hashlib.sha256(b"".join(numbered(i) for i in range(FLOOD))).hexdigest()
    return {"held back": held_back, "count": int(count), "intact": digest == expected}, grown


def flood_a_slow_client(server: Server) -> tuple[dict[str, object], float]:
    """The app sends FLOOD messages to a client that reads none for a while: (what the client got, how
    many MB the server grew by meanwhile)."""
    url = server.target.ws_url(f"/flood/client?n={FLOOD}")
    with websockets.sync.client.connect(url, max_size=None, max_queue=4, compression=None) as ws:
        before = server.rss_mb()
        wait_until(settled(server.state), 30, what="the app's flood to be held back")
        grown = server.rss_mb() - before
        held_back = server.state() < FLOOD
        received = [ws.recv(timeout=30) for _ in range(FLOOD)]
        last = ws.recv(timeout=30)
    in_order = all(message == numbered(i) for i, message in enumerate(received))
    return {"held back": held_back, "in order": in_order, "last": last}, grown


Flood = Callable[[Server], tuple[dict[str, object], float]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flood", [flood_a_slow_app, flood_a_slow_client])
def test_a_flood_is_held_back_whole_and_in_bounded_memory(flood: Flood, servers: dict[str, Server]) -> None:
    seen = {name: flood(server) for name, server in servers.items()}
    (bare, bare_grown), (edge, edge_grown) = seen["uvicorn"], seen["edgecli"]
    assert edge == bare, f"edgecli {edge} != uvicorn {bare}"
    assert edge["held back"], edge
    assert edge_grown < BOUND_MB, (
        f"serve and its worker grew by {edge_grown:.1f} MB (uvicorn {bare_grown:.1f})"
    )
