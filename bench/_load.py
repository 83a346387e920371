"""HTTP load generators for the serving benchmark: wrk when installed, else a Python one.

Both keep `connections` HTTP/1.1 keep-alive connections busy for `seconds`, each with one request in
flight at a time (closed loop, like wrk), and report requests/s, p50/p99 latency and errors.

The Python generator can also pace its requests (`rate` requests/s in total, spread evenly over the
connections): an open-loop load, under which latency shows what one request costs when the server keeps
up, rather than how long requests queue when it is saturated. Latency is then counted from the moment a
request was due, not from when it was sent, so a server that falls behind is not flattered (the
"coordinated omission" wrk's closed loop suffers from).

The Python generator exists so the benchmark runs where wrk is not installed. It runs its connections
in several processes (one asyncio loop each, uvloop when available, raw protocol callbacks and a
minimal response parser) so that it is not the bottleneck; bench/README.md records its ceiling
against wrk on the same server.
"""

from __future__ import annotations

import array
import asyncio
import functools
import multiprocessing
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import cast
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    requests: int  # completed with a 2xx status
    errors: int  # non-2xx responses and socket errors
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(
    tool: str,
    url: str,
    connections: int,
    seconds: float,
    procs: int,
    rate: float = 0,
    headers: Sequence[tuple[str, str]] = (),
) -> LoadResult:
    """Closed loop with `tool`; a paced (`rate` > 0) load always uses the Python generator. `headers` are
    sent with every request (e.g. an Authorization header)."""
    if tool == "wrk" and not rate:
        return run_wrk(url, connections, seconds, headers)
    return run_python(url, connections, seconds, procs, rate, headers)


# -- wrk ---------------------------------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def run_wrk(
    url: str, connections: int, seconds: float, headers: Sequence[tuple[str, str]] = ()
) -> LoadResult:
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers:
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(out: str) -> LoadResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    count = int(total.group(1))
    seconds = float(total.group(2)) * _UNITS_MS[total.group(3)] / 1e3
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(
        requests=count - (int(non_2xx.group(1)) if non_2xx else 0),
        errors=errors,
        seconds=seconds,
        p50_ms=_wrk_percentile(out, "50"),
        p99_ms=_wrk_percentile(out, "99"),
    )


def _wrk_percentile(out: str, pct: str) -> float:
    found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {pct}% latency in wrk's output:\n{out}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


# -- the Python generator ----------------------------------------------------------------------------


def run_python(
    url: str,
    connections: int,
    seconds: float,
    procs: int,
    rate: float = 0,
    headers: Sequence[tuple[str, str]] = (),
) -> LoadResult:
    """Split the connections over `procs` processes; all start together and stop at the same instant."""
    procs = max(1, min(procs, connections))
    parts = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    # Fork, not spawn: the children need nothing but this module, and forking is fast.
    ctx = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 0.5  # time for every process to connect before the clock starts
    stop_at = start_at + seconds
    pipes: list[Connection] = []
    workers = []
    pacing = _Pacing(connections, rate)
    first = 0
    for part in parts:
        ours, theirs = ctx.Pipe(duplex=False)
        args = (url, tuple(headers), range(first, first + part), pacing, start_at, stop_at, theirs)
        first += part
        proc = ctx.Process(target=_generator_main, args=args, daemon=True)
        proc.start()
        theirs.close()
        pipes.append(ours)
        workers.append(proc)
    try:
        results = [_receive(pipe, stop_at + 30) for pipe in pipes]
    finally:
        for proc in workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    latencies = array.array("q")
    ok = errors = 0
    for n_ok, n_err, raw in results:
        ok += n_ok
        errors += n_err
        latencies.frombytes(raw)
    return LoadResult(ok, errors, seconds, *_percentiles_ms(latencies))


def _receive(pipe: Connection, deadline: float) -> tuple[int, int, bytes]:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise RuntimeError("the Python load generator did not finish (see its traceback above)")
    try:
        return cast(tuple[int, int, bytes], pipe.recv())
    except EOFError:
        raise RuntimeError("a Python load generator process failed (see its traceback above)") from None


def _percentiles_ms(latencies_ns: array.array[int]) -> tuple[float, float]:
    if len(latencies_ns) < 2:
        return (float("nan"), float("nan"))
    cuts = statistics.quantiles(latencies_ns, n=100, method="inclusive")
    return cuts[49] / 1e6, cuts[98] / 1e6


@dataclass(frozen=True)
class _Pacing:
    connections: int
    rate: float  # requests/s over all connections; 0 = closed loop

    def interval_ns(self) -> int:
        """Time between two requests on one connection."""
        return int(self.connections / self.rate * 1e9) if self.rate else 0

    def offset_ns(self, index: int) -> int:
        """Connections are staggered so that the requests are evenly spread, not sent in bursts."""
        return index * self.interval_ns() // self.connections


def _generator_main(
    url: str,
    headers: tuple[tuple[str, str], ...],
    indexes: range,
    pacing: _Pacing,
    start_at: float,
    stop_at: float,
    out: Connection,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    stats = _Stats(start_at, stop_at)
    try:
        asyncio.run(_generate(url, headers, indexes, pacing, stats))
    except KeyboardInterrupt:
        return  # Ctrl-C reached the whole process group: the benchmark itself reports it
    out.send((stats.ok, stats.errors, stats.latencies.tobytes()))
    out.close()


class _Stats:
    def __init__(self, start_at: float, stop_at: float) -> None:
        # monotonic() is one clock for every process on the machine, so all generators share the window.
        self.start_ns = int(start_at * 1e9)
        self.stop_ns = int(stop_at * 1e9)
        self.ok = 0
        self.errors = 0
        self.latencies = array.array("q")

    def record(self, started: int, ended: int, status: int) -> None:
        if started < self.start_ns or ended > self.stop_ns:
            return  # only requests wholly inside the window count, as with a fixed-length run
        if 200 <= status < 300:
            self.ok += 1
            self.latencies.append(ended - started)
        else:
            self.errors += 1


async def _generate(
    url: str, headers: tuple[tuple[str, str], ...], indexes: range, pacing: _Pacing, stats: _Stats
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: edgecli-bench\r\n{extra}\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    clients = []
    for index in indexes:
        done: asyncio.Future[None] = loop.create_future()
        first_ns = stats.start_ns + pacing.offset_ns(index)
        client = functools.partial(_Client, request, stats, done, first_ns, pacing.interval_ns())
        await loop.create_connection(client, host, port)
        clients.append(done)
    # A response that never completes must not hang the benchmark: give up 10 s after the window.
    await asyncio.wait_for(asyncio.gather(*clients), stats.stop_ns / 1e9 - time.monotonic() + 10)


class _Client(asyncio.Protocol):
    """One keep-alive connection: send, read one whole response, record it, send the next.

    Closed loop (interval 0): the next request leaves as soon as a response is complete. Paced: requests
    are due every `interval_ns`; one that is already overdue leaves at once.
    """

    def __init__(
        self, request: bytes, stats: _Stats, done: asyncio.Future[None], first_ns: int, interval_ns: int
    ) -> None:
        self.request = request
        self.stats = stats
        self.done = done
        self.buf = b""
        self.started = 0
        self.due_ns = first_ns
        self.interval_ns = interval_ns
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        # Hold the first request until the window opens (plus this connection's stagger when paced).
        self._send_when_due()

    def _send_when_due(self) -> None:
        delay = (self.due_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send)
        else:
            self.send()

    def send(self) -> None:
        assert self.transport is not None
        if self.interval_ns:
            self.started = self.due_ns  # latency counts from when the request was due
            self.due_ns += self.interval_ns
        else:
            self.started = time.monotonic_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = _parse_response(self.buf)
        if parsed is None:
            return  # incomplete: wait for more
        status, used = parsed
        self.buf = self.buf[used:]
        now = time.monotonic_ns()
        self.stats.record(self.started, now, status)
        if now >= self.stats.stop_ns:
            self._finish()
        elif self.interval_ns:
            self._send_when_due()
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.stats.errors += 1  # the server closed a connection we still wanted
            self.done.set_result(None)

    def _finish(self) -> None:
        assert self.transport is not None
        if not self.done.done():
            self.done.set_result(None)
        self.transport.close()


def _parse_response(buf: bytes) -> tuple[int, int] | None:
    """(status, bytes used) for one complete response at the start of `buf`, or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    status = int(head[9:12])
    body_at = end + 4
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if length is not None:
        used = body_at + int(length.group(1))
        return (status, used) if len(buf) >= used else None
    if b"\r\ntransfer-encoding: chunked" in head:
        return _parse_chunked(buf, body_at, status)
    return status, body_at  # no body (e.g. 204)


def _parse_chunked(buf: bytes, pos: int, status: int) -> tuple[int, int] | None:
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(buf[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2 + size + 2
        if len(buf) < pos:
            return None
        if size == 0:
            return status, pos
