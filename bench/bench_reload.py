"""Hot reload benchmark: time from saving a function's file to the first response carrying the new code.

    python bench/bench_reload.py [--edits 20] [--policies per_worker,oneshot,per_request] [--pause 0.3]

For each policy, `edgecli serve` runs a project with the edited function and two bystanders. Each edit
writes index.py in place (as most editors save) with a new version number; the benchmark then polls the
function every few milliseconds until an answer carries that number. The time from just before the
write to that answer is one sample; median, p90 and extremes over `--edits` samples are reported per
policy (target: median <= 200 ms). Edits are `--pause` seconds apart, so each is its own reload.

Then a burst: 50 saves of the same file within one second; the reload events in the event store say how
many reloads that caused (target: one or two, not fifty). With per_worker, the bystanders' worker pids are
checked after all of it: an edit must not have recycled them.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _servers import Server, free_port, stop_all

FUNCTION = """\
import os
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({{"version": {version}, "pid": os.getpid()}})

serve(handler)
"""
CONFIG = '[edge_runtime]\npolicy = "{policy}"\ngraceful_exit_timeout_sec = 2\n'
POLICIES = ("per_worker", "oneshot", "per_request")
BYSTANDERS = ("alpha", "beta")
POLL_S = 0.003
TIMEOUT_S = 10.0
TARGET_MS = 200.0
READY = re.compile(r"new code ready in (\d+) ms")


@dataclass
class Result:
    policy: str
    samples_ms: list[float]
    ready_ms: list[float]  # what the reload lines say: first change seen → new workers booted
    burst_reloads: int
    bystanders_kept: bool | None  # None: the policy replaces workers anyway (oneshot, idle per_request)

    def row(self) -> str:
        s = sorted(self.samples_ms)
        p90 = s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]
        median = statistics.median(s)
        verdict = "ok" if median <= TARGET_MS else "OVER TARGET"
        return (
            f"| {self.policy} | {median:.0f} ms | {p90:.0f} ms | {s[0]:.0f}-{s[-1]:.0f} ms | "
            f"{statistics.median(self.ready_ms or [0]):.0f} ms | "
            f"{self.burst_reloads} | {_kept(self.bystanders_kept)} | {verdict} |"
        )


def _kept(kept: bool | None) -> str:
    return "n/a" if kept is None else "yes" if kept else "NO"


def write_project(root: Path, policy: str) -> Path:
    functions = root / "supabase" / "functions"
    for name in ("hello", *BYSTANDERS):
        (functions / name).mkdir(parents=True)
        (functions / name / "index.py").write_text(FUNCTION.format(version=0))
    (root / "supabase" / "config.toml").write_text(CONFIG.format(policy=policy))
    return functions / "hello" / "index.py"


def start(root: Path, policy: str) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(root), "--port", str(port)]
    server = Server(
        name=policy,
        cmd=[*cmd, "--no-verify-jwt"],
        url=f"http://127.0.0.1:{port}/functions/v1/hello",
        log_path=root / "serve.log",
        events_db=root / "supabase" / ".temp" / "edgecli" / "events.db",
    )
    server.start()
    server.wait_ready()
    return server


def until_version(client: httpx.Client, url: str, version: int) -> float:
    """Poll until the function answers with `version`; returns the monotonic time of that answer."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        r = client.get(url)
        if r.status_code == 200 and r.json()["version"] == version:
            return time.perf_counter()
        time.sleep(POLL_S)
    raise RuntimeError(f"version {version} not served within {TIMEOUT_S:g} s")


def measure_edits(client: httpx.Client, url: str, source: Path, edits: int, pause: float) -> list[float]:
    samples = []
    for version in range(1, edits + 1):
        time.sleep(pause)  # the previous reload is over: every edit is a reload of its own
        saved = time.perf_counter()
        source.write_text(FUNCTION.format(version=version))
        samples.append((until_version(client, url, version) - saved) * 1000)
    return samples


def reload_messages(events_db: Path) -> list[str]:
    with sqlite3.connect(f"{events_db.as_uri()}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT message FROM events WHERE kind = 'reload' ORDER BY id")]


def count_reloads(events_db: Path) -> int:
    return len(reload_messages(events_db))


def ready_times(events_db: Path) -> list[float]:
    time.sleep(0.2)  # the store is written every 50 ms
    found = (READY.search(message) for message in reload_messages(events_db))
    return [float(match.group(1)) for match in found if match]


def measure_burst(client: httpx.Client, url: str, source: Path, events_db: Path, first: int) -> int:
    time.sleep(0.5)
    before = count_reloads(events_db)
    start = time.monotonic()
    for i in range(50):  # on a schedule, so a hiccup does not spread the burst out
        source.write_text(FUNCTION.format(version=first + i))
        time.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
    until_version(client, url, first + 49)
    time.sleep(0.2)  # the store is written every 50 ms
    return count_reloads(events_db) - before


def bystander_pids(client: httpx.Client, base: str) -> dict[str, int]:
    return {name: client.get(f"{base}/{name}").json()["pid"] for name in BYSTANDERS}


def run_policy(policy: str, edits: int, pause: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-reload-") as tmp:
        root = Path(tmp)
        source = write_project(root, policy)
        server = start(root, policy)
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                base = server.url.rsplit("/", 1)[0]
                pids = bystander_pids(client, base)
                samples = measure_edits(client, server.url, source, edits, pause)
                assert server.events_db is not None
                ready = ready_times(server.events_db)
                burst = measure_burst(client, server.url, source, server.events_db, edits + 1)
                # Only per_worker keeps a worker for good: oneshot starts one per request, and an idle
                # per_request worker leaves after a moment, reload or not.
                kept = bystander_pids(client, base) == pids if policy == "per_worker" else None
        finally:
            killed = stop_all([server])
            if killed:
                print(f"warning: had to kill {killed}", file=sys.stderr)
        return Result(policy, samples, ready, burst, kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--json", action="store_true", help="also print the raw samples as JSON")
    args = parser.parse_args()
    results = [run_policy(p, args.edits, args.pause) for p in args.policies.split(",")]
    print(
        "| policy | median save → new response | p90 | min-max | reload line's ready time (median) | "
        "reloads for 50 saves in 1 s | "
        "bystanders kept their workers | target ≤ 200 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    if args.json:
        print(json.dumps({r.policy: [round(x, 1) for x in r.samples_ms] for r in results}))
    return 0 if all(statistics.median(r.samples_ms) <= TARGET_MS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
