"""The TypeScript worker alone: its CPU per request, with no serve, relay or HTTP in the way.

    python bench/bench_deno_worker.py [--requests 20000] [--rounds 3] [--against DIR]

Starts `deno run` of runtime/deno/worker.ts on a hello-world JSON handler, as the fork server would but
over pipes, and sends it REQUEST frames in batches of 32 (as serve's frames arrive under load) until
each has its last RESPONSE frame. Reports the worker's CPU µs per request for a request with two headers
and one with ten (what supabase-js sends: apikey, authorization, client info...). With `--against`, the
same from another source tree's worker, the two taking turns round after round (same machine load).
Medians across rounds. Needs Deno (`pip install 'edgecli[deno]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecli import ipc
from edgecli.deno import deno_binary
from edgecli.ipc import MORE, Kind

HANDLER = """\
const headers = { "content-type": "application/json" };
Deno.serve((_req: Request) => new Response(JSON.stringify({ message: "Hello world!" }), { headers }));
"""
FEW = [["host", "127.0.0.1:54321"], ["accept", "*/*"]]
MANY = [
    *FEW,
    ["user-agent", "supabase-js/2.45.0"],
    ["accept-encoding", "gzip, deflate"],
    ["authorization", "Bearer " + "a" * 160],
    ["apikey", "a" * 160],
    ["content-type", "application/json"],
    ["x-client-info", "supabase-js-web/2.45.0"],
    ["x-forwarded-for", "127.0.0.1"],
    ["connection", "keep-alive"],
]
BATCH = 32


class Worker:
    def __init__(self, deno: str, tree: Path, entrypoint: Path) -> None:
        spec = {"worker": "bench", "function": "hello", "entrypoint": str(entrypoint)}
        worker_ts = tree / "edgecli" / "runtime" / "deno" / "worker.ts"
        argv = [deno, "run", "--allow-all", "--quiet", "--no-prompt", str(worker_ts), json.dumps(spec)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.frames = self._frames()
        self.channel = 0
        next(f for f in self.frames if f[0] == Kind.READY)

    def _frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        parser = ipc.FrameParser()
        assert self.proc.stdout is not None
        while data := os.read(self.proc.stdout.fileno(), 1 << 16):
            yield from parser.feed(data)

    def run(self, count: int, headers: list[list[str]]) -> float:
        """CPU µs per request over `count` requests."""
        assert self.proc.stdin is not None
        process = psutil.Process(self.proc.pid)
        before = process.cpu_times()
        for _ in range(count // BATCH):
            out = []
            for _ in range(BATCH):
                self.channel += 1
                scope = {
                    "request_id": f"r{self.channel}", "method": "GET", "scheme": "http", "path": "/hello",
                    "raw_path": "/hello", "root_path": "", "type": "http", "query_string": "",
                    "headers": headers,
                }  # fmt: skip
                out += [ipc.pack_json(Kind.REQUEST, self.channel, scope), ipc.pack(Kind.BODY, self.channel)]
            self.proc.stdin.write(b"".join(out))
            self.proc.stdin.flush()
            done = 0
            for kind, flags, _, _ in self.frames:
                if kind == Kind.RESPONSE and not flags & MORE:
                    done += 1
                    if done == BATCH:
                        break
        after = process.cpu_times()
        used = after.user + after.system - before.user - before.system
        return used / (count // BATCH * BATCH) * 1e6

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(ipc.pack_json(Kind.STOP, 0, {"grace": 0, "reason": "bench"}))
        self.proc.stdin.close()
        self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another source tree, measured in turns with this one")
    args = parser.parse_args()
    deno = deno_binary()
    if deno is None:
        print("Deno is not installed: pip install 'edgecli[deno]'", file=sys.stderr)
        sys.exit(1)
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.against:
        trees["against"] = args.against.resolve()
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        entrypoint = Path(tmp) / "index.ts"
        entrypoint.write_text(HANDLER)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                worker = Worker(deno, tree, entrypoint)
                try:
                    for headers in (FEW, MANY):  # warm-up: V8 compiles the hot path for both
                        worker.run(2000, headers)
                    for label, headers in (("2 headers", FEW), ("10 headers", MANY)):
                        results.setdefault((name, label), []).append(worker.run(args.requests, headers))
                finally:
                    worker.stop()
    print(f"{args.rounds} rounds of {args.requests} requests; worker CPU per request, medians")
    for (name, label), samples in results.items():
        print(f"  {name:<10} {label:<11} {statistics.median(samples):7.1f} µs")


if __name__ == "__main__":
    main()
