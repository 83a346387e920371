"""TypeScript functions: `edgecli serve` of an index.ts against bare Deno serving the same handler.

    python bench/bench_deno.py [--rounds 5] [--seconds 4] [--connections 32]

Servers, started first and then loaded one after the other round after round (same machine load):

  deno         bare `deno run` of the handler with Deno.serve on its own port: the baseline
  per_worker   edgecli serve, per_worker (goal: >= 0.5x the baseline's requests/s)
  oneshot      edgecli serve, oneshot: a fresh Deno worker per request (instances/s, at 4 connections)
  python       edgecli serve, per_worker, of the same handler in Python: what edgecli's relay allows,
               whatever language the worker runs

Also reported: the cold start of a TS worker, as the p50 latency of oneshot requests on one connection
(each one boots a Deno worker, imports the function, answers, and is torn down). Medians across rounds.
Needs Deno (`pip install 'edgecli[deno]'`). The load comes from wrk when installed, else bench/_load.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _load import LoadResult, have_wrk, run_load
from _servers import Server, free_port, settle, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecli.deno import deno_binary

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
                    results[name].append(run_load(tool, servers[name].url, args.connections, args.seconds, 2))
                settle(servers.values())
                results["oneshot"].append(run_load(tool, servers["oneshot"].url, 4, args.seconds, 1))
                settle(servers.values())
                results["cold"].append(run_load("python", servers["oneshot"].url, 1, args.seconds, 1))
        finally:
            left = stop_all(servers.values())
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
    cold = statistics.median(r.p50_ms for r in results["cold"])
    print(f"  cold start of a TS worker (oneshot p50, one connection): {cold:.1f} ms")
    if left:
        print(f"processes left behind and killed: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
