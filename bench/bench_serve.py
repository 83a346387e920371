"""Serving benchmark: `edgecli serve` (per_worker, oneshot, --prod --workers N) against bare uvicorn.

    python bench/bench_serve.py [--quick] [--rounds 5] [--seconds 5] [--load auto|wrk|python] [--also SRC]

Every server serves the same hello-world JSON handler. Bare uvicorn is one process with httptools, uvloop
and no access log; edgecli serve runs with its defaults (terminal log to a file, event store on). All
servers are started first, then loaded one after the other, round after round, so they all see the same
machine load; before each load the servers are left to go idle (log and store written, workers reaped).
Scenarios:

  uvicorn           32 connections   the baseline every ratio is taken against (one process)
  uvicorn+log       32 connections   the same with uvicorn's default access log (to its log file): a
                                     reference for a server that records every request, as edgecli does
  per_worker        32 connections   verify_jwt off (--no-verify-jwt)
  per_worker+jwt    32 connections   verify_jwt on, the anon key sent: goal >= 0.8x the baseline, floor
                                     0.65x; within 5 % of per_worker
  uvicorn x2        32 connections   `uvicorn --workers 2`
  prod x2           32 connections   `edgecli serve --prod --workers 2` (anon key): goal >= 0.8x uvicorn x2
  uvicorn@8          8 connections   bare uvicorn at oneshot's concurrency, for comparison
  oneshot            8 connections   target >= 0.02x the baseline, p50 <= 10 ms (a fresh worker per request)

Then, paced at half of per_worker+jwt's own peak (its median closed-loop rate), per_worker+jwt and bare
uvicorn in alternating rounds: p50 and p99 latency when neither is saturated.

Reported: requests/s, p50/p99 latency and the ratio to the baseline (medians across rounds), the workers
booted (oneshot: one per request), the CPU each request costs in serve's own process, in its workers
(fork server included) and in the event store's process, and the RSS/USS of idle workers (target RSS <=
30 MB) after boot and after load.
The load comes from wrk when installed, else from bench/_load.py's Python generator.

`--also SRC` adds per_worker and oneshot servers that import edgecli from another checkout (SRC is its
root, holding edgecli/), loaded in the same rounds: an A/B comparison of a change under the same load.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
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
POLICIES = ("per_worker", "oneshot")

GOAL_PER_WORKER = 0.8  # per_worker+jwt against bare uvicorn
FLOOR_PER_WORKER = 0.65
JWT_APART = 0.05  # per_worker+jwt against per_worker
GOAL_PROD = 0.8  # prod xN against uvicorn xN
TARGET_ONESHOT = 0.02
TARGET_ONESHOT_P50_MS = 10.0
TARGET_IDLE_RSS_MB = 30.0


@dataclass(frozen=True)
class Scenario:
    label: str
    server: Server
    connections: int
    rate: float = 0  # paced at this many requests/s in total; 0 = closed loop


@dataclass(frozen=True)
class Measured:
    load: LoadResult
    cpu_host_us: float  # CPU per successful request in the server process
    cpu_workers_us: float  # ... in the fork server and workers
    cpu_store_us: float  # ... in the event store's process
    boots: int | None  # workers booted during the round (edgecli only)


# -- setup ---------------------------------------------------------------------------------------------


def anon_headers() -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edgecli.config import DEFAULT_JWT_SECRET
    from edgecli.host.auth import make_key

    return {"Authorization": f"Bearer {make_key(DEFAULT_JWT_SECRET, 'anon')}"}


def edgecli_server(
    tmp: Path, policy: str, src: Path | None = None, jwt: bool = False, prod_workers: int = 0
) -> Server:
    """`prod_workers` > 0: `serve --prod --workers N` (JWT on, no store), else serve with its defaults."""
    label = f"prod x{prod_workers}" if prod_workers else policy + ("+jwt" if jwt else "")
    name = label if src is None else f"{label}[{src.name}]"
    root = tmp / name.replace(" ", "_")
    (root / "supabase" / "functions" / "hello").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text(f'[edge_runtime]\npolicy = "{policy}"\n')
    (root / "supabase" / "functions" / "hello" / "index.py").write_text(FUNCTION)
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
    cmd += ["--policy", policy]
    if prod_workers:
        cmd += ["--prod", "--host", "127.0.0.1", "--workers", str(prod_workers)]
    elif not jwt:
        cmd.append("--no-verify-jwt")
    env = {**os.environ, "PORT": ""} if src is None else {**os.environ, "PORT": "", "PYTHONPATH": str(src)}
    db = None if prod_workers else root / "supabase" / ".temp" / "edgecli" / "events.db"
    headers = anon_headers() if jwt or prod_workers else {}
    url = f"http://127.0.0.1:{port}{PATH}"
    return Server(name, cmd, url, tmp / f"{root.name}.log", env=env, events_db=db, headers=headers)


def uvicorn_server(tmp: Path, workers: int = 1, access_log: bool = False) -> Server:
    """Bare uvicorn; `access_log`: with its default access log (a line a request, to its log file), what
    `uvicorn app:app` prints out of the box and the nearest to edgecli's record of every request."""
    name = ("uvicorn" if workers == 1 else f"uvicorn x{workers}") + ("+log" if access_log else "")
    app_dir = tmp / name.replace(" ", "_")
    app_dir.mkdir()
    (app_dir / "baseline.py").write_text(BASELINE)
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "baseline:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    cmd += ["--log-level", "info"] if access_log else ["--no-access-log", "--log-level", "warning"]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    return Server(name, cmd, f"http://127.0.0.1:{port}{PATH}", tmp / f"{app_dir.name}.log")


def check_source(src: Path, cwd: Path) -> None:
    """Make sure a server started with PYTHONPATH=src really imports edgecli from src."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "import edgecli; print(edgecli.__file__)"
    found = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    if not found.stdout.strip().startswith(str(src)):
        raise RuntimeError(f"--also {src}: edgecli is imported from {found.stdout.strip() or found.stderr}")


def make_servers(tmp: Path, args: argparse.Namespace) -> dict[str, Server]:
    servers = {"uvicorn": uvicorn_server(tmp)}
    if "per_worker" in args.policies:
        servers["uvicorn+log"] = uvicorn_server(tmp, access_log=True)
    for checkout in args.also:
        check_source(checkout, tmp)
    sources: list[Path | None] = [None, *args.also]
    for src in sources:
        for policy in args.policies:
            made = [edgecli_server(tmp, policy, src)]
            if policy == "per_worker":
                made.append(edgecli_server(tmp, policy, src, jwt=True))
            servers.update((server.name, server) for server in made)
    if args.prod_workers > 1 and "per_worker" in args.policies:
        servers[f"uvicorn x{args.prod_workers}"] = uvicorn_server(tmp, args.prod_workers)
        server = edgecli_server(tmp, "per_worker", prod_workers=args.prod_workers)  # --also: no --workers
        servers[server.name] = server
    return servers


def make_scenarios(servers: dict[str, Server], args: argparse.Namespace) -> list[Scenario]:
    """The baseline first (ratios are taken against it), then each concurrency's servers."""
    scenarios = [
        Scenario(name, servers[name], args.connections)
        for name in ("uvicorn", "uvicorn+log")
        if name in servers
    ]
    of = {policy: [s for s in servers.values() if s.name.startswith(policy)] for policy in args.policies}
    scenarios += [Scenario(s.name, s, args.connections) for s in of.get("per_worker", [])]
    scenarios += [Scenario(s.name, s, args.connections) for s in servers.values() if " x" in s.name]
    if "oneshot" in of:
        conns, rate = args.oneshot_clients, args.oneshot_rate
        scenarios.append(Scenario(f"uvicorn@{conns}", servers["uvicorn"], conns))
        scenarios += [Scenario(s.name, s, conns) for s in of["oneshot"]]
        scenarios += [Scenario(f"{s.name}@{rate:g}/s", s, conns, rate) for s in of["oneshot"] if rate]
    return scenarios


def boots(server: Server) -> int | None:
    if server.events_db is None:
        return None
    if not server.events_db.exists():
        return 0
    with sqlite3.connect(f"file:{server.events_db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM events WHERE kind = 'boot'").fetchone()[0])


# -- running -------------------------------------------------------------------------------------------


def measure(scenario: Scenario, servers: list[Server], args: argparse.Namespace, seconds: float) -> Measured:
    settle(servers)
    server = scenario.server
    cpu0, boots0 = server.cpu(), boots(server)
    headers = list(server.headers.items())
    load = run_load(args.tool, server.url, scenario.connections, seconds, args.procs, scenario.rate, headers)
    settle(servers)  # the round's log lines, store writes and worker exits belong to the round
    cpu1, boots1 = server.cpu(), boots(server)
    per_request = 1e6 / max(load.requests, 1)
    booted = None if boots0 is None or boots1 is None else boots1 - boots0
    return Measured(
        load,
        (cpu1.host - cpu0.host) * per_request,
        _workers(cpu1, cpu0) * per_request,
        max(0.0, cpu1.store - cpu0.store) * per_request,
        booted,
    )


def _workers(after: CpuSample, before: CpuSample) -> float:
    return max(0.0, after.workers - before.workers)


def run(args: argparse.Namespace, servers: dict[str, Server]) -> None:
    everyone = list(servers.values())
    scenarios = make_scenarios(servers, args)
    for server in everyone:
        server.start()
    for server in everyone:
        server.wait_ready()
    settle(everyone)
    edgecli = [s for s in everyone if s.events_db is not None]
    memory_boot = {s.name: s.memory() for s in edgecli}
    paced = " (paced: python)" if any(s.rate for s in scenarios) else ""
    print(
        f"load: {args.tool}{paced}; {args.rounds} round(s) x {len(scenarios)} scenarios x {args.seconds:g} s"
    )
    for scenario in scenarios if args.warmup > 0 else []:
        measure(scenario, everyone, args, args.warmup)
    results: dict[str, list[Measured]] = {s.label: [] for s in scenarios}
    for round_ in range(args.rounds):
        for scenario in scenarios:
            got = measure(scenario, everyone, args, args.seconds)
            results[scenario.label].append(got)
            print(f"  round {round_ + 1} {scenario.label:<24} {got.load.rps:9,.0f} req/s  "
                  f"p50 {got.load.p50_ms:7.2f} ms  p99 {got.load.p99_ms:7.2f} ms  "
                  f"errors {got.load.errors}", flush=True)  # fmt: skip
    paced = paced_rounds(results, servers, everyone, args)
    settle(everyone)
    memory_load = {s.name: s.memory() for s in edgecli}
    report(scenarios, results)
    report_paced(paced)
    report_memory(memory_boot, memory_load)
    verdicts(results, memory_load)


def paced_rounds(
    results: dict[str, list[Measured]],
    servers: dict[str, Server],
    everyone: list[Server],
    args: argparse.Namespace,
) -> dict[str, list[Measured]]:
    """per_worker+jwt and bare uvicorn paced at half of per_worker+jwt's median closed-loop rate, by turns."""
    if "per_worker+jwt" not in results or not args.paced_rounds:
        return {}
    rate = round(_med(r.load.rps for r in results["per_worker+jwt"]) / 2)
    pair = [
        Scenario(f"{name}@{rate}/s", servers[name], args.connections, rate)
        for name in ("uvicorn", "per_worker+jwt")
    ]
    paced: dict[str, list[Measured]] = {s.label: [] for s in pair}
    for round_ in range(args.paced_rounds):
        for scenario in pair:
            got = measure(scenario, everyone, args, args.seconds)
            paced[scenario.label].append(got)
            print(f"  paced {round_ + 1} {scenario.label:<24} {got.load.rps:9,.0f} req/s  "
                  f"p50 {got.load.p50_ms:7.2f} ms  p99 {got.load.p99_ms:7.2f} ms", flush=True)  # fmt: skip
    return paced


def report_paced(paced: dict[str, list[Measured]]) -> None:
    if not paced:
        return
    print(f"\n{'paced (python generator)':<32} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'host µs/req':>11}")
    for label, rounds in paced.items():
        rps, p50 = _med(r.load.rps for r in rounds), _med(r.load.p50_ms for r in rounds)
        p99, host = _med(r.load.p99_ms for r in rounds), _med(r.cpu_host_us for r in rounds)
        print(f"{label:<32} {rps:>9,.0f} {p50:>7.2f} {p99:>7.2f} {host:>11.0f}")


# -- report --------------------------------------------------------------------------------------------


def ratio(results: dict[str, list[Measured]], label: str, base: str = "") -> float:
    """Median over rounds of (this scenario's req/s / the baseline's req/s in the same round). The
    baseline: `base`, else `uvicorn xN` for a `... xN` scenario, else bare uvicorn."""
    if not base:
        base = f"uvicorn x{label.split(' x')[1].split('[')[0]}" if " x" in label else "uvicorn"
    rounds = results[base]
    return statistics.median(r.load.rps / b.load.rps for r, b in zip(results[label], rounds, strict=True))


def report(scenarios: list[Scenario], results: dict[str, list[Measured]]) -> None:
    w = max(22, *(len(s.label) for s in scenarios))
    print()
    print(f"{'scenario':<{w}} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'x uvicorn':>9} "
          f"{'errors':>6} {'boots':>6} {'host µs/req':>11} {'workers µs/req':>14} "
          f"{'store µs/req':>12}")  # fmt: skip
    for scenario in scenarios:
        rounds = results[scenario.label]
        booted = [r.boots for r in rounds if r.boots is not None]
        times = "-" if scenario.rate else f"{ratio(results, scenario.label):.3f}x"
        print(f"{scenario.label:<{w}} {scenario.connections:>5} {_med(r.load.rps for r in rounds):>9,.0f} "
              f"{_med(r.load.p50_ms for r in rounds):>7.2f} {_med(r.load.p99_ms for r in rounds):>7.2f} "
              f"{times:>9} {sum(r.load.errors for r in rounds):>6} "
              f"{sum(booted) if booted else '-':>6} {_med(r.cpu_host_us for r in rounds):>11.0f} "
              f"{_med(r.cpu_workers_us for r in rounds):>14.0f} "
              f"{_med(r.cpu_store_us for r in rounds):>12.0f}")  # fmt: skip


def report_memory(boot: dict[str, list[MemorySample]], load: dict[str, list[MemorySample]]) -> None:
    w = max(20, *(len(name) for name in boot))
    print()
    head = f"{'after boot: RSS':>16} {'USS':>5}"
    print(f"{'memory (MB, largest)':<{w + 14}} {head}   {head.replace('boot', 'load')}")
    for name in boot:
        for role in ("server", "event store", "fork server", "keeper", "worker"):
            before = [m for m in boot[name] if m.role == role]
            after = [m for m in load[name] if m.role == role]
            print(f"  {name:<{w}} {role:<11} {_mem(before):>22}   {_mem(after):>22}")


def verdicts(results: dict[str, list[Measured]], memory: dict[str, list[MemorySample]]) -> None:
    def p50(label: str) -> float:
        return _med(r.load.p50_ms for r in results[label])

    checks: list[tuple[str, bool]] = []
    if "per_worker+jwt" in results:
        jwt = ratio(results, "per_worker+jwt")
        checks.append(
            (f"per_worker+jwt >= {GOAL_PER_WORKER}x uvicorn (goal): {jwt:.3f}x", jwt >= GOAL_PER_WORKER)
        )
        checks.append((f"per_worker+jwt >= {FLOOR_PER_WORKER}x uvicorn (floor)", jwt >= FLOOR_PER_WORKER))
        apart = ratio(results, "per_worker+jwt", base="per_worker")
        checks.append(
            (f"verify_jwt on vs off within {JWT_APART:.0%}: {apart:.3f}x", abs(apart - 1) <= JWT_APART)
        )
    for label in [label for label in results if label.startswith("prod x")]:
        got = ratio(results, label)
        checks.append((f"{label} >= {GOAL_PROD}x uvicorn x{label[6:]}: {got:.3f}x", got >= GOAL_PROD))
    if "oneshot" in results:
        checks.append((f"oneshot >= {TARGET_ONESHOT}x uvicorn", ratio(results, "oneshot") >= TARGET_ONESHOT))
        checks.append(
            (
                f"oneshot p50 <= {TARGET_ONESHOT_P50_MS:g} ms (closed loop)",
                p50("oneshot") <= TARGET_ONESHOT_P50_MS,
            )
        )
    for label in [label for label in results if label.startswith("oneshot@")]:
        checks.append(
            (f"{label} p50 <= {TARGET_ONESHOT_P50_MS:g} ms (paced)", p50(label) <= TARGET_ONESHOT_P50_MS)
        )
    rss = max(
        (m.rss_mb for name in POLICIES for m in memory.get(name, []) if m.role == "worker"), default=0.0
    )
    checks.append((f"idle worker RSS <= {TARGET_IDLE_RSS_MB:g} MB", 0 < rss <= TARGET_IDLE_RSS_MB))
    checks.append(("no errors", all(r.load.errors == 0 for rounds in results.values() for r in rounds)))
    print()
    for what, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {what}")  # fmt: skip


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
    add = parser.add_argument
    add("--quick", action="store_true", help="one short round (a smoke run, not a measurement)")
    add("--rounds", type=int, default=5, help="rounds over every scenario (default 5)")
    add("--seconds", type=float, default=5.0, help="load per scenario per round (default 5)")
    add("--warmup", type=float, default=1.0, help="unrecorded load per scenario first (default 1)")
    add("--load", choices=["auto", "wrk", "python"], default="auto", help="load generator (default auto)")
    add("--procs", type=int, default=2, help="processes of the Python load generator (default 2)")
    add("--connections", type=int, default=32, help="connections for uvicorn and per_worker (default 32)")
    add(
        "--prod-workers", type=int, default=2, help="processes of prod xN and uvicorn xN; 0: none (default 2)"
    )
    add("--paced-rounds", type=int, default=3, help="rounds paced at half per_worker+jwt's peak (default 3)")
    add("--oneshot-clients", type=int, default=8, help="connections for oneshot (default 8)")
    add("--oneshot-rate", type=float, default=50, help="oneshot paced at this req/s too; 0: not (default 50)")
    add("--only", choices=POLICIES, action="append", dest="policies", help="bench only this policy")
    add("--also", type=Path, action="append", default=[], metavar="SRC", help="also serve edgecli from SRC")
    args = parser.parse_args()
    args.policies = args.policies or list(POLICIES)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.paced_rounds = 1, 2.0, 0.5, 1
    if args.load == "wrk" and not have_wrk():
        parser.error("--load wrk: wrk is not installed (e.g. `apt-get install wrk`); or use --load python")
    for src in args.also:
        if not (src / "edgecli" / "__init__.py").is_file():
            parser.error(f"--also {src}: no edgecli/__init__.py there; give the root of an edgecli checkout")
    args.also = [src.resolve() for src in args.also]
    args.tool = "wrk" if args.load == "wrk" or (args.load == "auto" and have_wrk()) else "python"
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the benchmark the way Ctrl-C does: servers stopped first


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-serve-") as tmp:
        servers: dict[str, Server] = {}
        try:
            servers.update(make_servers(Path(tmp), args))
            run(args, servers)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the servers", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"bench_serve: {exc}", file=sys.stderr)
            return 1
        finally:
            killed = stop_all(servers.values())
            if killed:
                print("had to kill:\n  " + "\n  ".join(killed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
