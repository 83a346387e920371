"""TypeScript functions: `edgecli serve` of an index.ts against bare Deno serving the same handler.

    python bench/bench_deno.py [--rounds 5] [--seconds 4] [--connections 32]

Servers, started first and then loaded one after the other round after round (same machine load):

  deno         bare `deno run` of the handler with Deno.serve on its own port: the baseline
  per_worker   edgecli serve, per_worker (goal: >= 0.5x the baseline's requests/s)
  oneshot      edgecli serve, oneshot: a fresh Deno worker per request (instances/s, at 4 connections)
  python       edgecli serve, per_worker, of the same handler in Python: what edgecli's relay allows,
               whatever language the worker runs

For per_worker and python, the CPU each request cost serve's process (the relay) and the worker side
(fork server and workers) is reported too: where the time goes.

Also reported: the cold start of a TS worker, as the p50 latency of oneshot requests on one connection
(each one boots a Deno worker, imports the function, answers, and is torn down), and the type check serve
runs before the first worker of new code: `deno check` of the handler changed (a new constant each time:
TypeScript runs) and unchanged (Deno's cache answers), against `deno run` of an empty module (what
starting Deno costs at all). Medians across rounds.
Needs Deno (`pip install 'edgecli[deno]'`). The load comes from wrk when installed, else bench/_load.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import LoadResult, have_wrk, run_load
from _servers import Server, free_port, settle, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecli.deno import deno_binary
from edgecli.host.deno import DECLARATIONS

HANDLER = """\
const headers = { "content-type": "application/json" };
const handler = (_req: Request) => new Response(JSON.stringify({ message: "Hello world!" }), { headers });
"""
PYTHON_HANDLER = """\
from starlette.responses import JSONResponse

async def handler(req):
    return JSONResponse({"message": "Hello world!"})
"""
SERVED = {  # name: (policy, entrypoint, source)
    "per_worker": ("per_worker", "index.ts", HANDLER + "Deno.serve(handler);\n"),
    "oneshot": ("oneshot", "index.ts", HANDLER + "Deno.serve(handler);\n"),
    "python": ("per_worker", "index.py", PYTHON_HANDLER),
}


def make_servers(root: Path, deno: str) -> dict[str, Server]:
    bare_port = free_port()
    bare = root / "bare.ts"
    bare.write_text(HANDLER + f'Deno.serve({{ hostname: "127.0.0.1", port: {bare_port} }}, handler);\n')
    url = f"http://127.0.0.1:{bare_port}/"
    servers = {
        "deno": Server("deno", [deno, "run", "--allow-net", "--quiet", str(bare)], url, root / "deno.log")
    }
    for name, (policy, entrypoint, source) in SERVED.items():
        project = root / name
        (project / "supabase" / "functions" / "hello").mkdir(parents=True)
        (project / "supabase" / "config.toml").write_text(f'[edge_runtime]\npolicy = "{policy}"\n')
        (project / "supabase" / "functions" / "hello" / entrypoint).write_text(source)
        port = free_port()
        cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(project), "--port", str(port)]
        url = f"http://127.0.0.1:{port}/functions/v1/hello"
        servers[name] = Server(name, [*cmd, "--no-verify-jwt", "--no-reload"], url, root / f"{name}.log")
    return servers


def load_with_cpu(
    server: Server, tool: str, connections: int, seconds: float
) -> tuple[LoadResult, tuple[float, float]]:
    """A load run, and the CPU µs each request cost serve's own process and the worker side."""
    before = server.cpu()
    result = run_load(tool, server.url, connections, seconds, 2)
    after = server.cpu()
    per = 1e6 / max(result.requests, 1)
    return result, ((after.host - before.host) * per, (after.workers - before.workers) * per)


def time_type_checks(root: Path, deno: str, rounds: int) -> dict[str, list[float]]:
    """ms for `deno check` of a changed and of an unchanged module, and `deno run` of an empty one,
    in a Deno cache of the benchmark's own (warmed by one check first, as serve's is after a while)."""
    env = {**os.environ, "DENO_DIR": str(root / "deno-cache"), "NO_COLOR": "1"}
    module, empty = root / "checked.ts", root / "empty.ts"
    empty.write_text("")

    def run(*args: str) -> float:
        started = time.perf_counter()
        subprocess.run([deno, *args], env=env, check=True, capture_output=True, timeout=300)
        return (time.perf_counter() - started) * 1000

    check = ("check", "--quiet", str(DECLARATIONS), str(module))
    module.write_text(HANDLER + "Deno.serve(handler);\n")
    run(*check)
    times: dict[str, list[float]] = {"changed": [], "unchanged": [], "deno run": []}
    for i in range(rounds):
        module.write_text(HANDLER + f"export const round: number = {i};\nDeno.serve(handler);\n")
        times["changed"].append(run(*check))
        times["unchanged"].append(run(*check))
        times["deno run"].append(run("run", "--quiet", str(empty)))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    deno = deno_binary()
    if deno is None:
        print("Deno is not installed: pip install 'edgecli[deno]'", file=sys.stderr)
        return 2
    tool = "wrk" if have_wrk() else "python"
    results: dict[str, list[LoadResult]] = {name: [] for name in ("deno", *SERVED, "cold")}
    cpu: dict[str, list[tuple[float, float]]] = {"per_worker": [], "python": []}  # µs per request
    with tempfile.TemporaryDirectory() as tmp:
        servers = make_servers(Path(tmp), deno)
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            for _ in range(args.rounds):
                for name in ("deno", "per_worker", "python"):
                    settle(servers.values())
                    result, used = load_with_cpu(servers[name], tool, args.connections, args.seconds)
                    results[name].append(result)
                    if name in cpu:
                        cpu[name].append(used)
                settle(servers.values())
                results["oneshot"].append(run_load(tool, servers["oneshot"].url, 4, args.seconds, 1))
                settle(servers.values())
                results["cold"].append(run_load("python", servers["oneshot"].url, 1, args.seconds, 1))
        finally:
            left = stop_all(servers.values())
        checks = time_type_checks(Path(tmp), deno, args.rounds)
    base = statistics.median(r.rps for r in results["deno"])
    print(f"{args.rounds} rounds of {args.seconds:g} s, load from {tool}; medians")
    for name in ("deno", "per_worker", "python", "oneshot"):
        rps = statistics.median(r.rps for r in results[name])
        p50 = statistics.median(r.p50_ms for r in results[name])
        p99 = statistics.median(r.p99_ms for r in results[name])
        errors = sum(r.errors for r in results[name])
        print(
            f"  {name:<11} {rps:9.0f} req/s  {rps / base:5.2f}x  "
            f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}"
        )
    for name, samples in cpu.items():
        host = statistics.median(h for h, _ in samples)
        workers = statistics.median(w for _, w in samples)
        print(f"  {name:<11} CPU per request: serve {host:6.0f} µs, worker side {workers:6.0f} µs")
    cold = statistics.median(r.p50_ms for r in results["cold"])
    print(f"  cold start of a TS worker (oneshot p50, one connection): {cold:.1f} ms")
    start = statistics.median(checks["deno run"])
    for name in ("changed", "unchanged"):
        ms = statistics.median(checks[name])
        print(f"  deno check, {name:<9} {ms:8.0f} ms  {ms / start:5.1f}x deno run of an empty module")
    print(f"  deno run of an empty module: {start:.0f} ms")
    if left:
        print(f"processes left behind and killed: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
