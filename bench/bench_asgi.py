"""ASGI fidelity benchmark: `edgecli serve` (per_worker) side by side with bare uvicorn, same app, same run.

    python bench/bench_asgi.py [--rounds 5] [--mb 50] [--messages 2000] [--abandon 200] [--only ws ...]
                               [--also SRC]

Both servers serve one raw ASGI app (bare uvicorn with httptools, uvloop, no access log; edgecli with its
defaults, the app as a function). Each round measures, on each server in turn:

  download MB/s      a 50 MB single-body response read whole             target edgecli >= 0.5x uvicorn
  first byte ms      from the app's send of that body to its first byte at the client     target <= 20 ms
  upload MB/s        a 50 MB request body read whole by the app           target edgecli >= 0.5x uvicorn
  ws echo msg/s      small text messages echoed on one WebSocket          target edgecli >= 0.5x uvicorn
  ws CPU us/msg      CPU the server's processes spent per echoed message (all of them: serve and its
                     worker), steadier than msg/s on a shared machine
  after abandon ms   a request's latency just after 200 streams were abandoned, against a quiet server's
                     (the median of 20 requests before)                   target within 2x of quiet

Medians across rounds are printed with the ratios. Hello-world throughput is bench_serve.py's. `--also
SRC` adds an edgecli that imports edgecli from another checkout (as bench_serve.py's), for an A/B of two
trees in one run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import websockets.sync.client
from _servers import Server, free_port, stop_all

APP = """
import asyncio, json, time

BODIES = {}
SSE, JSON = b"text/event-stream", b"application/json"

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    route = scope["path"].rsplit("/", 1)[-1]
    if route == "big":
        size = int(scope["query_string"] or b"50") << 20
        body = BODIES.get(size) or BODIES.setdefault(size, b"b" * size)  # built once, not per request
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if route == "stream":  # until the client leaves, which it learns as Starlette's streams do
        gone = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", SSE)]})
        while not gone.done():
            await send({"type": "http.response.body", "body": b"data: tick\\n\\n", "more_body": True})
            await asyncio.wait([gone], timeout=0.05)
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"size": size, "at": time.time()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", JSON)]})
    await send({"type": "http.response.body", "body": body})
"""


def servers(tmp: Path, also: list[Path]) -> dict[str, Server]:
    app_dir = tmp / "uvicorn"
    app_dir.mkdir()
    (app_dir / "asgiapp.py").write_text(APP)
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "asgiapp:app", "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    bare = Server("uvicorn", cmd, f"http://127.0.0.1:{port}/asgi/hello", tmp / "uvicorn.log")
    root = tmp / "project"  # not "edgecli": the servers run there, and it would shadow the package
    function = root / "supabase" / "functions" / "asgi"
    function.mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text(
        '[edge_runtime]\npolicy = "per_worker"\n\n[functions.asgi]\nmax_body_mb = 0\n'
    )
    (function / "index.py").write_text(APP)
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
    cmd += ["--no-verify-jwt"]
    edge = Server("edgecli", cmd, f"http://127.0.0.1:{port}/functions/v1/asgi/hello", tmp / "edgecli.log")
    found = {"uvicorn": bare, "edgecli": edge}
    for src in also:
        port = free_port()
        cmd = [*edge.cmd[: edge.cmd.index("--port") + 1], str(port), "--no-verify-jwt"]
        name = f"edgecli@{src.name}"
        url = f"http://127.0.0.1:{port}/functions/v1/asgi/hello"
        env = {**os.environ, "PYTHONPATH": str(src)}  # the servers run outside any checkout: it wins
        found[name] = Server(name, cmd, url, tmp / f"{name}.log", env=env)
    return found


def base(server: Server) -> str:
    return server.url.rsplit("/", 1)[0]


def download(server: Server, mb: int) -> tuple[float, float]:
    """(MB/s of the whole response, ms from sending the request to the first body byte). Read off a
    plain socket: an HTTP client library's own buffering would hide when the bytes arrived."""
    host, port, path = address(server, f"/big?{mb}")
    with socket.create_connection((host, port), timeout=120) as sock:
        started = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(1 << 16)
        head, body = received.split(b"\r\n\r\n", 1)
        while not body:
            body = sock.recv(1 << 16)
        first = time.perf_counter()
        size = len(body)
        while size < mb << 20:
            chunk = sock.recv(1 << 20)
            assert chunk, size
            size += len(chunk)
        total = time.perf_counter() - started
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    # The app sends its (prebuilt) body as soon as the request arrives, so this bounds from above the
    # delay between the app's send and the first byte.
    return (mb / total, (first - started) * 1000)


def address(server: Server, route: str) -> tuple[str, int, str]:
    """(host, port, path) of one of the app's routes on `server`."""
    hostport, _, path = server.url.split("//", 1)[1].partition("/")
    host, port = hostport.split(":")
    return host, int(port), "/" + path.rsplit("/", 1)[0] + route


def upload(server: Server, mb: int) -> float:
    body = b"u" * (mb << 20)
    started = time.perf_counter()
    r = httpx.post(f"{base(server)}/upload", content=body, timeout=120)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["size"] == len(body), r.text
    return mb / elapsed


def ws_echo(server: Server, messages: int) -> tuple[float, float]:
    """(messages per second, server CPU µs per message)."""
    url = base(server).replace("http://", "ws://") + "/ws"
    with websockets.sync.client.connect(url, compression=None) as ws:
        ws.send("warm")
        ws.recv(timeout=10)
        processes = server.family()
        cpu = sum(_cpu(p) for p in processes)
        started = time.perf_counter()
        for i in range(messages):
            ws.send(f"m{i}")
            ws.recv(timeout=10)
        elapsed = time.perf_counter() - started
        cpu = sum(_cpu(p) for p in processes) - cpu
    return messages / elapsed, cpu / messages * 1e6


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def latency_ms(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    assert client.get(url).status_code == 200
    return (time.perf_counter() - started) * 1000


def abandon(server: Server, streams: int) -> tuple[float, float]:
    """(quiet median latency ms, latency ms of the first request after abandoning `streams` streams)."""
    url = server.url
    host, port, path = address(server, "/stream")
    with httpx.Client(timeout=30) as client:
        quiet = statistics.median(latency_ms(client, url) for _ in range(20))
        for _ in range(streams):
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                received = b""
                while b"data: tick" not in received:
                    received += sock.recv(4096)
        after = latency_ms(client, url)
    return quiet, after


def measure(servers: dict[str, Server], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
    probes: dict[str, Callable[[Server], dict[str, float]]] = {
        "download": lambda s: dict(
            zip(("download MB/s", "first byte ms"), download(s, args.mb), strict=True)
        ),
        "upload": lambda s: {"upload MB/s": upload(s, args.mb)},
        "ws": lambda s: dict(zip(("ws echo msg/s", "ws CPU us/msg"), ws_echo(s, args.messages), strict=True)),
        "abandon": lambda s: dict(
            zip(("quiet ms", "after abandon ms"), abandon(s, args.abandon), strict=True)
        ),
    }
    chosen = [probe for name, probe in probes.items() if not args.only or name in args.only]
    for round_no in range(args.rounds):
        for probe in chosen:
            for name, server in servers.items():
                for key, value in probe(server).items():
                    results[name].setdefault(key, []).append(value)
        print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> None:
    bare, edge = results["uvicorn"], results["edgecli"]
    others = [name for name in results if name != "uvicorn"]
    print(f"{'measure':<20}{'uvicorn':>12}" + "".join(f"{name:>16}{'ratio':>7}" for name in others))
    for key in bare:
        b = statistics.median(bare[key])
        row = f"{key:<20}{b:>12.1f}"
        for name in others:
            e = statistics.median(results[name][key])
            row += f"{e:>16.1f}{e / b:>7.2f}"
        print(row)
    if "after abandon ms" in edge:
        pairs = zip(edge["after abandon ms"], edge["quiet ms"], strict=True)
        after = statistics.median(a / q for a, q in pairs)
        print(f"edgecli after abandoning / quiet: {after:.2f}x (target <= 2x)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--abandon", type=int, default=200)
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="SRC")
    parser.add_argument(
        "--only", action="append", choices=["download", "upload", "ws", "abandon"], help="these probes only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-asgi-") as tmp:
        running = servers(Path(tmp), [src.resolve() for src in args.also])
        try:
            for server in running.values():
                server.start()
            for server in running.values():
                server.wait_ready()
            measure(running, args)  # a first pass warms both up
            report(measure(running, args))
        finally:
            left = stop_all(running.values())
            if left:
                print(f"killed leftovers: {left}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
