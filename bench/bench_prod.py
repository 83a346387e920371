"""`edgecli serve --prod` figures: cold start, SIGTERM to exit, and throughput against dev serve.

    python bench/bench_prod.py [--quick] [--rounds 5] [--seconds 5] [--load auto|wrk|python]

- cold start: from starting the process to the first 200 from /_internal/health, for the repository's
  demo project (supabase/, copied to a temp dir), which warms max_parallelism (one per CPU) workers
  of each of its three functions; baseline: bare uvicorn + Starlette, from start to its first 200.
- SIGTERM to exit: an idle --prod server; then one with a background task of --task-seconds running
  (registered by the request just before the signal): the drain lets it finish, then serve exits.
  Baseline: bare uvicorn, idle.
- throughput on hello (64 connections, closed loop): --prod (JSON lines to a file, no event store,
  max_parallelism warm workers: one per CPU) against dev serve with its defaults (terminal log to a file,
  event store on, file watcher, one warm worker), loaded in turn, round after round; also --prod with
  max_parallelism = 1, the mode alone. Ratios to dev are taken round by round, for req/s and for the CPU
  a request costs in serve, the fork server and the workers.
Every figure is a median over the rounds.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _load import have_wrk, run_load
from _servers import Server, free_port, settle, stop_all

REPO = Path(__file__).resolve().parents[1]
HEALTH = "/_internal/health"
HELLO = """\
from starlette.responses import JSONResponse

async def handler(req):
    return JSONResponse({"message": "Hello world!"})
"""
BASELINE = HELLO + (
    "from starlette.applications import Starlette\nfrom starlette.routing import Route\n"
    'app = Starlette(routes=[Route("/functions/v1/hello", handler)])\n'
)
TASK = """\
import asyncio, os
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def work():
    await asyncio.sleep(float(os.environ["TASK_SECONDS"]))

async def handler(req):
    EdgeRuntime.wait_until(work())
    return PlainTextResponse("accepted")
"""


def project(root: Path, functions: dict[str, str], extra: str = "") -> Path:
    for name, code in functions.items():
        (root / "supabase" / "functions" / name).mkdir(parents=True)
        (root / "supabase" / "functions" / name / "index.py").write_text(code)
    (root / "supabase" / "config.toml").write_text('[edge_runtime]\npolicy = "per_worker"\n' + extra)
    return root


def edgecli_cmd(root: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port), *flags]


def uvicorn_cmd(app_dir: Path, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "baseline:app", "--port", str(port)]
    return [*cmd, "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def first_200(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")


def start_stop(
    cmd: list[str], url: str, log: Path, before_stop: str | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, float]:
    """(start → first 200 at `url`, SIGTERM → exit) in seconds; `before_stop` is POSTed first. An exit
    status outside `ok`, or a process left behind, stops the benchmark."""
    server = Server(log.stem, cmd, url, log)
    t0 = time.monotonic()
    server.start()
    assert server.proc is not None
    try:
        first_200(url, server.proc)
        ready = time.monotonic() - t0
        server.family()
        if before_stop is not None:
            with urllib.request.urlopen(urllib.request.Request(before_stop, data=b"{}"), timeout=10) as resp:
                assert resp.status == 200
        t1 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
        stopped = time.monotonic() - t1
    finally:
        left = server.finish_stop()
    if code not in ok or left:
        raise RuntimeError(f"{cmd}: exit status {code}, left behind: {left}\n{server.log_tail()}")
    return ready, stopped


def lifecycle(tmp: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    demo = tmp / "demo"
    shutil.copytree(REPO / "supabase", demo / "supabase", ignore=shutil.ignore_patterns(".temp", ".env"))
    secrets = f'\n[edge_runtime.secrets]\nTASK_SECONDS = "{args.task_seconds}"\n'
    tasks = project(tmp / "tasks", {"task": TASK}, secrets)
    (tmp / "uvicorn").mkdir()
    (tmp / "uvicorn" / "baseline.py").write_text(BASELINE)
    got: dict[str, list[float]] = {k: [] for k in ("uv_start", "uv_stop", "cold", "stop_idle", "stop_task")}
    # uvicorn re-raises SIGTERM once it has shut down: it "dies of" the signal when all went well.
    uv_ok = (0, -signal.SIGTERM)
    for round_ in range(args.rounds):
        base = f"http://127.0.0.1:{(port := free_port())}"
        uv = start_stop(
            uvicorn_cmd(tmp / "uvicorn", port), f"{base}/functions/v1/hello", tmp / "uv.log", ok=uv_ok
        )
        base = f"http://127.0.0.1:{(port := free_port())}"
        prod = start_stop(edgecli_cmd(demo, port, "--prod"), base + HEALTH, tmp / "demo.log")
        base = f"http://127.0.0.1:{(port := free_port())}"
        cmd = edgecli_cmd(tasks, port, "--prod", "--no-verify-jwt")
        task = start_stop(cmd, base + HEALTH, tmp / "tasks.log", before_stop=f"{base}/functions/v1/task")
        for key, value in zip(got, (uv[0], uv[1], prod[0], prod[1], task[1]), strict=True):
            got[key].append(value)
        cells = [
            f"uvicorn start {uv[0] * 1000:5.0f} ms stop {uv[1] * 1000:4.0f} ms",
            f"--prod demo start→health 200 {prod[0] * 1000:5.0f} ms",
            f"SIGTERM→exit idle {prod[1] * 1000:4.0f} ms",
            f"with a {args.task_seconds:g} s task {task[1] * 1000:5.0f} ms",
        ]
        print(f"  round {round_ + 1}: " + " | ".join(cells), flush=True)
    return got


def throughput(tmp: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """req/s, p50 and CPU per request (serve, fork server, workers, event store) of each server, per round."""
    one = project(tmp / "hello-1", {"hello": HELLO}, "max_parallelism = 1\n")
    variants = {"dev": (project(tmp / "hello", {"hello": HELLO}), ()), "prod": (tmp / "hello", ("--prod",))}
    variants["prod1"] = (one, ("--prod",))  # one warm worker, as dev has: the mode alone
    servers = {}
    for name, (root, flags) in variants.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}/functions/v1/hello"
        servers[name] = Server(
            name, edgecli_cmd(root, port, "--no-verify-jwt", *flags), url, tmp / f"{name}.log"
        )
    everyone = list(servers.values())
    got: dict[str, list[float]] = {f"{k}_{n}": [] for n in servers for k in ("rps", "p50", "cpu")}
    try:
        for server in everyone:
            server.start()
        for server in everyone:
            server.wait_ready()
        for server in everyone:
            run_load(args.tool, server.url, args.connections, args.warmup, args.procs)
        for round_ in range(args.rounds):
            for name, server in servers.items():
                settle(everyone)
                before = server.cpu()
                load = run_load(args.tool, server.url, args.connections, args.seconds, args.procs)
                settle(everyone)
                after = server.cpu()
                cpu = (
                    (after.host + after.workers - before.host - before.workers) * 1e6 / max(load.requests, 1)
                )
                for key, value in (("rps", load.rps), ("p50", load.p50_ms), ("cpu", cpu)):
                    got[f"{key}_{name}"].append(value)
                print(f"  round {round_ + 1} {name:<5} {load.rps:9,.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
                      f"CPU {cpu:5.0f} µs/req  errors {load.errors}", flush=True)  # fmt: skip
    finally:
        left = stop_all(everyone)
    if left:
        raise RuntimeError(f"left behind: {left}")
    return got


def report(life: dict[str, list[float]], load: dict[str, list[float]], args: argparse.Namespace) -> None:
    def ms(key: str) -> str:
        return f"{statistics.median(life[key]) * 1000:.0f} ms"

    def med(key: str) -> float:
        return statistics.median(load[key])

    cold = statistics.median(life["cold"]) / statistics.median(life["uv_start"])
    print(
        f"\ncold start to health 200 (demo, --prod): {ms('cold')}  (uvicorn: {ms('uv_start')}; {cold:.2f}x)"
    )
    print(f"SIGTERM to exit, idle: {ms('stop_idle')}  (bare uvicorn: {ms('uv_stop')})")
    print(f"SIGTERM to exit, a {args.task_seconds:g} s background task running: {ms('stop_task')}")
    for name, what in (("prod", "--prod"), ("prod1", "--prod, max_parallelism = 1")):
        ratio = statistics.median(p / d for p, d in zip(load[f"rps_{name}"], load["rps_dev"], strict=True))
        cpu = statistics.median(p / d for p, d in zip(load[f"cpu_{name}"], load["cpu_dev"], strict=True))
        print(f"hello, {args.connections} connections, {what}: {med(f'rps_{name}'):,.0f} req/s "
              f"(p50 {med(f'p50_{name}'):.2f} ms, {med(f'cpu_{name}'):.0f} µs CPU/req); "
              f"against dev: {ratio:.3f}x req/s, {cpu:.3f}x CPU/req")  # fmt: skip
    print(
        f"  dev: {med('rps_dev'):,.0f} req/s (p50 {med('p50_dev'):.2f} ms, {med('cpu_dev'):.0f} µs CPU/req)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="one short round (a smoke run, not a measurement)")
    add("--rounds", type=int, default=5, help="rounds (default 5)")
    add("--seconds", type=float, default=5.0, help="load per server per round (default 5)")
    add("--warmup", type=float, default=1.0, help="unrecorded load per server first (default 1)")
    add("--task-seconds", type=float, default=1.0, help="the background task's length (default 1)")
    add("--load", choices=["auto", "wrk", "python"], default="auto", help="load generator (default auto)")
    add("--procs", type=int, default=2, help="processes of the Python load generator (default 2)")
    add("--connections", type=int, default=64, help="connections (default 64)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 2.0, 0.5
    args.tool = "wrk" if args.load == "wrk" or (args.load == "auto" and have_wrk()) else "python"
    return args


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-prod-") as tmp:
        try:
            print(f"start and stop, {args.rounds} round(s):")
            life = lifecycle(Path(tmp), args)
            print(f"throughput (load: {args.tool}), {args.rounds} round(s) x {args.seconds:g} s:")
            load = throughput(Path(tmp), args)
        except KeyboardInterrupt:
            return 130
        except RuntimeError as exc:
            print(f"bench_prod: {exc}", file=sys.stderr)
            return 1
    report(life, load, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
