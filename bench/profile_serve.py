"""Where a request's CPU goes, stage by stage: serve's process, the worker's and the event store's.

    python bench/profile_serve.py [--seconds 10] [--connections 32] [--rate 250] [--native] [--also SRC]

Serves the hello-world function of bench_serve.py (per_worker, JWT verification on, the anon key sent,
event store on, no CPU limit so that no worker is replaced under the sampler), loads it with wrk (else
the Python generator) and, over the same window, samples each process with py-spy (`pip install
py-spy`: a development tool, not a dependency of edgecli). Each sample is put in the stage of the
innermost frame a rule below knows; a stage's share of a process's samples times that process's CPU
per request (psutil, same window) is the stage's CPU per request.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import have_wrk, run_load
from _servers import KEEPER, Server, free_port, settle, stop_all
from bench_serve import FUNCTION, PATH

# (file part, function or "", stage): the first rule matching a frame, from the innermost frame out.
SERVE_RULES = [
    ("edgecli/host/relay.py", "log_request", "request record (event: terminal + store feed)"),
    ("edgecli/host/server.py", "emit", "request record (event: terminal + store feed)"),
    ("edgecli/console.py", "", "request record (event: terminal + store feed)"),
    ("edgecli/render.py", "", "request record (event: terminal + store feed)"),
    ("edgecli/events.py", "", "request record (event: terminal + store feed)"),
    ("edgecli/store/feed.py", "", "request record (event: terminal + store feed)"),
    ("edgecli/host/status.py", "", "request record (event: terminal + store feed)"),
    ("edgecli/host/auth.py", "", "relay: routing and auth"),
    ("edgecli/host/exchange.py", "respond", "response path (worker → client)"),
    ("edgecli/host/exchange.py", "first_item", "response path (worker → client)"),
    ("uvicorn/protocols/http/httptools_impl.py", "send", "response path (worker → client)"),
    ("edgecli/host/connection.py", "_on_frame", "response path (worker → client)"),
    ("edgecli/ipc.py", "", "framing and socket writes (worker socket)"),
    ("edgecli/host/connection.py", "", "framing and socket writes (worker socket)"),
    ("edgecli/host/exchange.py", "", "relay: exchange set-up and close"),
    ("edgecli/batching.py", "", "socket writes, batched per loop pass (HTTP and worker)"),
    ("edgecli/host/relay.py", "", "relay: routing and auth"),
    ("edgecli/host/pool.py", "", "relay: routing and auth"),
    ("edgecli/host/worker.py", "", "relay: routing and auth"),
    ("edgecli/http_protocol.py", "", "HTTP parse (uvicorn, httptools)"),
    ("uvicorn/", "", "HTTP parse (uvicorn, httptools)"),
    # A lent connection's frames (busy, started, ended) come to serve through the supervisor, and the
    # request's end reads its worker's output pipes: they are not limit sampling.
    ("edgecli/host/lending.py", "", "lent connections: the worker's frames, output pipes read"),
    ("edgecli/host/output.py", "", "lent connections: the worker's frames, output pipes read"),
    ("edgecli/host/supervisor.py", "on_lent", "lent connections: the worker's frames, output pipes read"),
    ("edgecli/host/enforcer.py", "", "limits sampling"),
    ("edgecli/host/usage.py", "", "limits sampling"),
    ("edgecli/host/supervisor.py", "", "supervisor (spawn, reap, events)"),
    ("asyncio/", "", "event loop"),
]
WORKER_RULES = [
    ("edgecli/runtime/lent_request.py", "end", "the request record (built, encoded)"),
    ("edgecli/events.py", "", "the request record (built, encoded)"),
    ("edgecli/runtime/capture.py", "", "events and output capture"),
    ("starlette/", "", "the ASGI app (Starlette handler)"),
    ("hello/index.py", "", "the ASGI app (Starlette handler)"),
    ("edgecli/runtime/api.py", "", "the ASGI app (Starlette handler)"),
    ("edgecli/ipc.py", "", "framing of what it tells serve"),
    ("edgecli/batching.py", "", "socket writes: responses to clients, frames to serve"),
    # A lent connection's requests: the worker parses and answers them (docs/architecture.md).
    ("edgecli/runtime/lent.py", "", "lent connection: the decision on each head, LENT_BUSY"),
    ("edgecli/runtime/lent_request.py", "", "lent request: scope, request id, send, answers"),
    ("edgecli/answers.py", "", "lent request: scope, request id, send, answers"),
    ("edgecli/idle_watch.py", "", "lent request: scope, request id, send, answers"),
    ("edgecli/routing.py", "", "lent request: scope, request id, send, answers"),
    ("edgecli/http_protocol.py", "", "HTTP parse and response (uvicorn, httptools)"),
    ("uvicorn/", "", "HTTP parse and response (uvicorn, httptools)"),
    ("edgecli/runtime/worker.py", "", "worker loop: channels, scope, send/receive"),
    ("edgecli/runtime/tasks.py", "", "worker loop: channels, scope, send/receive"),
    ("asyncio/", "", "event loop"),
]
STORE_RULES = [
    ("edgecli/store/writer.py", "parse_rows", "decode the block, check each row"),
    ("edgecli/store/writer.py", "_values", "decode the block, check each row"),
    ("edgecli/store/writer.py", "_trim", "retention (trim)"),
    ("edgecli/store/writer.py", "write", "SQLite insert and commit"),
    ("edgecli/store/writer.py", "pump", "pipe reads, waiting for the next commit"),
]


WAITING = "waiting, or the loop's own C code (uvloop: epoll, socket reads)"
# Innermost Python frames where a thread waits (or runs C code py-spy does not see into).
WAIT_LEAVES = {"run", "run_until_complete", "run_forever", "pump", "select"}


def classify(stack: list[str], rules: list[tuple[str, str, str]]) -> str:
    """`stack`: py-spy frames, outermost first, each `function (file:line)`."""
    if stack and stack[-1].partition(" (")[0].rpartition(".")[2] in WAIT_LEAVES:
        return WAITING
    for frame in reversed(stack):
        function, _, where = frame.partition(" (")
        function = function.rpartition(".")[2]  # py-spy names methods Class.method
        for part, name, stage in rules:
            if part in where and (not name or name == function):
                return stage
    return "other (start-up code, GC, native)"


def read_raw(path: Path) -> collections.Counter[str]:
    """py-spy's raw format with --threads: one collapsed stack a line, `thread;frame;... count`. Only
    the main thread's (the first seen with a `MainThread` name, else the first): the other threads of
    serve (the file watcher's, libuv's) use ~1 % of its CPU, and py-spy takes their waits for work."""
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return counts
    main = None
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        if main is None or ("MainThread" in thread and "MainThread" not in main):
            main = thread
        if frames and count.isdigit() and thread == main:
            counts[frames] += int(count)
    return counts


def stages(
    raw: collections.Counter[str], rules: list[tuple[str, str, str]], unknown: collections.Counter[str]
) -> dict[str, int]:
    """Samples per stage; `unknown` counts the innermost frames, by stage."""
    by_stage: collections.Counter[str] = collections.Counter()
    for stack, count in raw.items():
        frames = stack.split(";")
        stage = classify(frames, rules)
        by_stage[stage] += count
        unknown[f"{stage[:20]}: {frames[-1]}"] += count
    return dict(by_stage)


def spy(pid: int, out: Path, seconds: float, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [args.py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate"]
    cmd += [str(args.rate), "--format", "raw", "--full-filenames", "--threads", "--output", str(out)]
    cmd += ["--native"] if args.native else ["--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def edgecli_server(tmp: Path, src: Path | None, headers: list[tuple[str, str]]) -> Server:
    root = tmp / ("this-tree" if src is None else f"also-{src.name}")
    (root / "supabase" / "functions" / "hello").mkdir(parents=True)
    # No CPU limit: under full load a worker would reach the default soft limit in about a second and
    # be replaced, taking its sampler's process away.
    config = '[edge_runtime]\npolicy = "per_worker"\ncpu_time_soft_limit_ms = 0\ncpu_time_hard_limit_ms = 0\n'
    (root / "supabase" / "config.toml").write_text(config)
    (root / "supabase" / "functions" / "hello" / "index.py").write_text(FUNCTION)
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    db = root / "supabase" / ".temp" / "edgecli" / "events.db"
    url = f"http://127.0.0.1:{port}{PATH}"
    return Server(root.name, cmd, url, tmp / f"{root.name}.log", env, db, dict(headers))


def profile(server: Server, args: argparse.Namespace, tmp: Path, headers: list[tuple[str, str]]) -> None:
    settle([server])
    family = {"serve": server.proc.pid if server.proc else 0}
    forkserver, store = server.forkserver(), server.store()
    # The fork server's children are keepers; each one's child is the worker.
    workers = [p for p in forkserver.children(recursive=True) if p.name() != KEEPER] if forkserver else []
    if workers:
        family["worker"] = workers[0].pid
    if store is not None:
        family["store"] = store.pid
    spies = {role: spy(pid, tmp / f"{role}.raw", args.seconds, args) for role, pid in family.items()}
    time.sleep(0.5)  # py-spy attaches
    cpu0 = server.cpu()
    load = run_load(args.tool, server.url, args.connections, args.seconds, 2, 0, headers)
    cpu1 = server.cpu()
    for proc in spies.values():
        proc.wait(timeout=args.seconds + 30)
    per = 1e6 / max(load.requests, 1)
    cpu = {
        "serve": (cpu1.host - cpu0.host) * per,
        "worker": (cpu1.workers - cpu0.workers) * per,
        "store": (cpu1.store - cpu0.store) * per,
    }
    print(f"\n{server.name}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, errors {load.errors}")
    rules = {"serve": SERVE_RULES, "worker": WORKER_RULES, "store": STORE_RULES}
    for role in family:
        unknown: collections.Counter[str] = collections.Counter()
        counts = stages(read_raw(tmp / f"{role}.raw"), rules[role], unknown)
        total = sum(counts.values()) or 1
        print(f"  {role}: {cpu[role]:.0f} µs CPU per request ({total} samples)")
        for stage, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"    {stage:<58} {100 * n / total:5.1f} %  {cpu[role] * n / total:6.1f} µs")
        for frame, n in unknown.most_common(args.leaves):
            print(f"      {100 * n / total:5.1f} % {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (pauses the process)")
    parser.add_argument("--leaves", type=int, default=0, help="show the N commonest innermost frames")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="SRC")
    args = parser.parse_args()
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(args.py_spy).exists():
        parser.error("py-spy is not installed: `pip install py-spy`")
    args.tool = "wrk" if have_wrk() else "python"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edgecli.config import DEFAULT_JWT_SECRET
    from edgecli.host.auth import make_key

    headers = [("Authorization", f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}")]
    with tempfile.TemporaryDirectory(prefix="edgecli-profile-") as tmp:
        sources = [None, *(src.resolve() for src in args.also)]
        servers = [edgecli_server(Path(tmp), src, headers) for src in sources]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            for server in servers:
                run_load(args.tool, server.url, args.connections, 1.0, 2, 0, headers)  # warm-up
                profile(server, args, Path(tmp), headers)
        finally:
            stop_all(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
