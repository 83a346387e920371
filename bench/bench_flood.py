"""Log flood benchmark: how much one function's flood of output slows another function, and what it
costs serve's memory.

    python bench/bench_flood.py [--rounds 5] [--seconds 4] [--lines 20000] [--raw-mb 20]

One `edgecli serve --policy per_worker` runs three functions: `hello` (answers at once), `printer`
(prints `--lines` lines of 100 characters per request without yielding to its loop) and `raw` (writes
`--raw-mb` MB to fd 1 with no newline, as a C library dumping a buffer would). Each round measures
`hello`'s latency, one request at a time, for `--seconds` under three conditions in a rotating order:
no flood, `printer` called back to back from another thread, `raw` likewise. The figure is the median
over rounds of each round's median-latency ratio (flood / no flood), next to how many records the flood
produced per second and serve's peak RSS (sampled every 50 ms). Target (issue 16): ratio <= 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from _servers import Server, free_port, stop_all

CONFIG = """\
[edge_runtime]
policy = "per_worker"
max_parallelism = 1
cpu_time_soft_limit_ms = 0
cpu_time_hard_limit_ms = 0
"""

HELLO = """\
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse("hi")
"""

PRINTER = """\
from starlette.responses import PlainTextResponse

async def handler(req):
    n = int(req.query_params["n"])
    for i in range(n):
        print(f"{i:>8} " + "x" * 91)
    return PlainTextResponse(str(n))
"""

RAW = """\
import os
from starlette.responses import PlainTextResponse

async def handler(req):
    chunk = b"z" * (1 << 20)
    for _ in range(int(req.query_params["mb"])):
        os.write(1, chunk)
    os.write(1, b"\\n")
    return PlainTextResponse("ok")
"""


def write_project(root: Path) -> None:
    functions = root / "supabase" / "functions"
    for name, code in (("hello", HELLO), ("printer", PRINTER), ("raw", RAW)):
        (functions / name).mkdir(parents=True)
        (functions / name / "index.py").write_text(code)
    (root / "supabase" / "config.toml").write_text(CONFIG)


class Flood:
    """Calls one flooding function back to back until stopped; counts the records it asked for."""

    def __init__(self, base: str, name: str, params: dict[str, str], records: int) -> None:
        self.base, self.name, self.params, self.records = base, name, params, records
        self.stop = threading.Event()
        self.calls = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=300) as client:
            while not self.stop.is_set():
                client.get(f"/functions/v1/{self.name}", params=self.params)
                self.calls += 1

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.elapsed = time.monotonic() - self.started
        self.thread.join(300)


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                return


def median_latency_ms(client: httpx.Client, seconds: float) -> float:
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        assert client.get("/functions/v1/hello").status_code == 200
        latencies.append((time.perf_counter() - started) * 1000)
    return statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--raw-mb", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgecli-flood-") as tmp:
        root = Path(tmp)
        write_project(root)
        port = free_port()
        cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
        server = Server(
            "edgecli",
            [*cmd, "--no-verify-jwt"],
            f"http://127.0.0.1:{port}/functions/v1/hello",
            root / "serve.log",
        )
        server.start()
        try:
            server.wait_ready()
            assert server.proc is not None
            rss = PeakRss(server.proc.pid)
            base = f"http://127.0.0.1:{port}"
            floods = {
                "print": ("printer", {"n": str(args.lines)}, args.lines),
                "raw": ("raw", {"mb": str(args.raw_mb)}, args.raw_mb * 105),  # 10,000-char records
            }
            ratios: dict[str, list[float]] = {name: [] for name in floods}
            rates: dict[str, list[float]] = {name: [] for name in floods}
            baselines: list[float] = []
            with httpx.Client(base_url=base, timeout=60) as client:
                median_latency_ms(client, 1.0)  # warm up
                for round_no in range(args.rounds):
                    order = ["none", *floods]
                    order = order[round_no % 3 :] + order[: round_no % 3]
                    got: dict[str, float] = {}
                    for condition in order:
                        if condition == "none":
                            got["none"] = median_latency_ms(client, args.seconds)
                            continue
                        name, params, records = floods[condition]
                        with Flood(base, name, params, records) as flood:
                            time.sleep(0.5)  # the flood is under way
                            got[condition] = median_latency_ms(client, args.seconds)
                        rates[condition].append(flood.calls * records / flood.elapsed)
                        time.sleep(1.0)  # serve catches up on what the flood left
                    baselines.append(got["none"])
                    for name in floods:
                        ratios[name].append(got[name] / got["none"])
                    print(
                        f"round {round_no + 1}: hello median {got['none']:.2f} ms alone; "
                        + "; ".join(f"{n} flood x{got[n] / got['none']:.2f}" for n in floods),
                        flush=True,
                    )
            rss.stop.set()
            print(f"\nhello median alone: {statistics.median(baselines):.2f} ms (median of rounds)")
            for name in floods:
                print(
                    f"{name:>5} flood: hello median x{statistics.median(ratios[name]):.2f} "
                    f"(rounds {', '.join(f'{r:.2f}' for r in ratios[name])}); "
                    f"~{statistics.median(rates[name]):,.0f} records/s recorded"
                )
            print(f"serve peak RSS over the run: {rss.peak:.0f} MB")
        finally:
            left = stop_all([server])
            if left:
                print("processes left behind:", left)


if __name__ == "__main__":
    main()
