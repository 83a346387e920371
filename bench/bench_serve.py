"""Serving benchmark: `edgecli serve` (per_worker, oneshot) against bare uvicorn + Starlette.

    python bench/bench_serve.py [--quick] [--rounds 3] [--seconds 5] [--load auto|wrk|python]

Every server serves the same hello-world JSON handler. Bare uvicorn is one process with httptools, uvloop
and no access log; edgecli serve runs with its defaults (terminal log to a file, event store on). All
servers are started first, then loaded one after the other, round after round, so they all see the same
machine load; before each load the servers are left to go idle (log and store written, workers reaped).
Scenarios:

  uvicorn      64 connections   the baseline every ratio is taken against
  per_worker   64 connections   target >= 0.5x the baseline
  uvicorn@8     8 connections   bare uvicorn at oneshot's concurrency, for comparison
  oneshot       8 connections   target >= 0.02x the baseline, p50 <= 10 ms (a fresh worker per request)

Reported: requests/s, p50/p99 latency and the ratio to the baseline (medians across rounds), the workers
booted (oneshot: one per request), the CPU each request costs in serve's own process and in its workers,
and the RSS/USS of idle workers (target RSS <= 30 MB) after boot and again after the load.
The load comes from wrk when installed, else from bench/_load.py's Python generator.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from _load import LoadResult, have_wrk, run_load
from _servers import CpuSample, MemorySample, Server, free_port, settle, stop_all

HANDLER = """\
from starlette.requests import Request
from starlette.responses import JSONResponse
"""
HANDLER_BODY = """
async def handler(req: Request) -> JSONResponse:
    return JSONResponse({"message": "Hello world!"})
"""
FUNCTION = HANDLER + "from edgecli import serve\n" + HANDLER_BODY + "\nserve(handler)\n"
BASELINE = (
    HANDLER
    + "from starlette.applications import Starlette\nfrom starlette.routing import Route\n"
    + HANDLER_BODY
    + '\napp = Starlette(routes=[Route("/functions/v1/hello", handler)])\n'
)
PATH = "/functions/v1/hello"

TARGET_PER_WORKER = 0.5
TARGET_ONESHOT = 0.02
TARGET_ONESHOT_P50_MS = 10.0
TARGET_IDLE_RSS_MB = 30.0


@dataclass(frozen=True)
class Scenario:
    label: str
    server: Server
    connections: int


@dataclass(frozen=True)
class Measured:
    load: LoadResult
    cpu_host_us: float  # CPU per successful request in the server process
    cpu_workers_us: float  # ... in the fork server and workers
    boots: int | None  # workers booted during the round (edgecli only)


# -- setup ---------------------------------------------------------------------------------------------


def edgecli_server(tmp: Path, policy: str) -> Server:
    root = tmp / policy
    (root / "supabase" / "functions" / "hello").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text(f'[edge_runtime]\npolicy = "{policy}"\n')
    (root / "supabase" / "functions" / "hello" / "index.py").write_text(FUNCTION)
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
    cmd += ["--no-verify-jwt", "--policy", policy]
    return Server(policy, cmd, f"http://127.0.0.1:{port}{PATH}", tmp / f"{policy}.log")


def uvicorn_server(tmp: Path) -> Server:
    app_dir = tmp / "uvicorn"
    app_dir.mkdir()
    (app_dir / "baseline.py").write_text(BASELINE)
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "baseline:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    cmd += ["--log-level", "warning"]
    return Server("uvicorn", cmd, f"http://127.0.0.1:{port}{PATH}", tmp / "uvicorn.log")


def events_db(server: Server) -> Path | None:
    if "edgecli" not in server.cmd:
        return None
    workdir = Path(server.cmd[server.cmd.index("--workdir") + 1])
    return workdir / "supabase" / ".temp" / "edgecli" / "events.db"


def boots(server: Server) -> int | None:
    path = events_db(server)
    if path is None:
        return None
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM events WHERE kind = 'boot'").fetchone()[0])


# -- running -------------------------------------------------------------------------------------------


def measure(scenario: Scenario, servers: list[Server], args: argparse.Namespace, seconds: float) -> Measured:
    settle(servers)
    server = scenario.server
    cpu0, boots0 = server.cpu(), boots(server)
    load = run_load(args.tool, server.url, scenario.connections, seconds, args.procs)
    settle(servers)  # the round's log lines, store writes and worker exits belong to the round
    cpu1, boots1 = server.cpu(), boots(server)
    per_request = 1e6 / max(load.requests, 1)
    booted = None if boots0 is None or boots1 is None else boots1 - boots0
    return Measured(load, (cpu1.host - cpu0.host) * per_request, _workers(cpu1, cpu0) * per_request, booted)


def _workers(after: CpuSample, before: CpuSample) -> float:
    return max(0.0, after.workers - before.workers)


def run(args: argparse.Namespace, servers: list[Server]) -> None:
    baseline, per_worker, oneshot = servers
    scenarios = [
        Scenario("uvicorn", baseline, args.connections),
        Scenario("per_worker", per_worker, args.connections),
        Scenario(f"uvicorn@{args.oneshot_clients}", baseline, args.oneshot_clients),
        Scenario("oneshot", oneshot, args.oneshot_clients),
    ]
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()
    settle(servers)
    memory_boot = {s.name: s.memory() for s in (per_worker, oneshot)}
    print(
        f"load: {args.tool}; {args.rounds} round(s) x {len(scenarios)} scenarios x {args.seconds:g} s",
        flush=True,
    )
    if args.warmup > 0:
        for scenario in scenarios:
            measure(scenario, servers, args, args.warmup)
    results: dict[str, list[Measured]] = {s.label: [] for s in scenarios}
    for round_ in range(args.rounds):
        for scenario in scenarios:
            got = measure(scenario, servers, args, args.seconds)
            results[scenario.label].append(got)
            print(f"  round {round_ + 1} {scenario.label:<12} {got.load.rps:9,.0f} req/s  "
                  f"p50 {got.load.p50_ms:6.2f} ms  p99 {got.load.p99_ms:6.2f} ms  "
                  f"errors {got.load.errors}", flush=True)  # fmt: skip
    settle(servers)
    memory_load = {s.name: s.memory() for s in (per_worker, oneshot)}
    report(scenarios, results, memory_boot, memory_load)


# -- report --------------------------------------------------------------------------------------------


def report(
    scenarios: list[Scenario],
    results: dict[str, list[Measured]],
    memory_boot: dict[str, list[MemorySample]],
    memory_load: dict[str, list[MemorySample]],
) -> None:
    base = results[scenarios[0].label]
    print()
    print(f"{'scenario':<12} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'x uvicorn':>9} "
          f"{'errors':>6} {'boots':>6} {'host µs/req':>11} {'workers µs/req':>14}")  # fmt: skip
    for scenario in scenarios:
        rounds = results[scenario.label]
        ratio = statistics.median(r.load.rps / b.load.rps for r, b in zip(rounds, base, strict=True))
        booted = [r.boots for r in rounds if r.boots is not None]
        print(f"{scenario.label:<12} {scenario.connections:>5} {_med(r.load.rps for r in rounds):>9,.0f} "
              f"{_med(r.load.p50_ms for r in rounds):>7.2f} {_med(r.load.p99_ms for r in rounds):>7.2f} "
              f"{ratio:>8.3f}x {sum(r.load.errors for r in rounds):>6} "
              f"{sum(booted) if booted else '-':>6} {_med(r.cpu_host_us for r in rounds):>11.0f} "
              f"{_med(r.cpu_workers_us for r in rounds):>14.0f}")  # fmt: skip
    print()
    print("memory (MB)            after boot: RSS   USS    after load: RSS   USS")
    for name in memory_boot:
        for role in ("server", "fork server", "worker"):
            before = [m for m in memory_boot[name] if m.role == role]
            after = [m for m in memory_load[name] if m.role == role]
            print(f"  {name:<10} {role:<11} {_mem(before):>17}    {_mem(after):>17}")
    print()
    verdicts(scenarios, results, memory_load)


def verdicts(
    scenarios: list[Scenario], results: dict[str, list[Measured]], memory: dict[str, list[MemorySample]]
) -> None:
    base = results[scenarios[0].label]

    def ratio(label: str) -> float:
        return statistics.median(r.load.rps / b.load.rps for r, b in zip(results[label], base, strict=True))

    oneshot_p50 = _med(r.load.p50_ms for r in results["oneshot"])
    idle_rss = max(
        (m.rss_mb for samples in memory.values() for m in samples if m.role == "worker"), default=0.0
    )
    checks = [
        (f"per_worker >= {TARGET_PER_WORKER}x uvicorn", ratio("per_worker") >= TARGET_PER_WORKER),
        (f"oneshot >= {TARGET_ONESHOT}x uvicorn", ratio("oneshot") >= TARGET_ONESHOT),
        (f"oneshot p50 <= {TARGET_ONESHOT_P50_MS:g} ms", oneshot_p50 <= TARGET_ONESHOT_P50_MS),
        (f"idle worker RSS <= {TARGET_IDLE_RSS_MB:g} MB", 0 < idle_rss <= TARGET_IDLE_RSS_MB),
        ("no errors", all(r.load.errors == 0 for rounds in results.values() for r in rounds)),
    ]
    for what, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {what}")


def _med(values: Iterable[float]) -> float:
    return statistics.median(values)


def _mem(samples: list[MemorySample]) -> str:
    if not samples:
        return "-"
    rss = max(m.rss_mb for m in samples)
    uss = max(m.uss_mb for m in samples)
    many = f"{len(samples)}x " if len(samples) > 1 else ""
    return f"{many}{rss:5.1f} {uss:5.1f}"


# -- main ----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short round (a smoke run, not a measurement)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every scenario (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="load per scenario per round (default 5)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unrecorded load per scenario first (default 1)"
    )
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--procs", type=int, default=2, help="processes of the Python load generator")
    parser.add_argument("--connections", type=int, default=64, help="connections for uvicorn and per_worker")
    parser.add_argument("--oneshot-clients", type=int, default=8, help="connections for oneshot (default 8)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 2.0, 0.5
    if args.load == "wrk" and not have_wrk():
        parser.error("--load wrk: wrk is not installed (e.g. `apt-get install wrk`); or use --load python")
    args.tool = "wrk" if args.load == "wrk" or (args.load == "auto" and have_wrk()) else "python"
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the benchmark the way Ctrl-C does: servers stopped first


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        servers = [uvicorn_server(tmp), edgecli_server(tmp, "per_worker"), edgecli_server(tmp, "oneshot")]
        try:
            run(args, servers)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the servers", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"bench_serve: {exc}", file=sys.stderr)
            return 1
        finally:
            killed = stop_all(servers)
            if killed:
                print("had to kill:\n  " + "\n  ".join(killed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
