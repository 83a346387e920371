"""Start-up time of everyday commands, against `python -c pass` in the same run.

    python bench/bench_startup.py [--runs 10]

Each command runs `--runs` times as a user runs it (the `edgecli` console script, in a fresh process);
the figure is the median wall time, beside Python's own start-up. `logs -n 1` reads a store of a few
events; `invoke` calls a small local HTTP server. The goal (README of bench/) is 150 ms for each.
"""

from __future__ import annotations

import argparse
import http.server
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

EDGECLI = str(Path(sys.executable).parent / "edgecli")


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _project(root: Path) -> Path:
    subprocess.run([EDGECLI, "init", "--workdir", str(root)], check=True, capture_output=True)
    from edgecli.config import Config
    from edgecli.events import Event
    from edgecli.store import StoreWriter

    writer = StoreWriter(Config(project_dir=root).events_db, retention=1000)
    for i in range(20):
        writer.emit(Event("log", f"line {i}", function="hello"))
    writer.close()
    return root


def _median_ms(cmd: list[str], runs: int, cwd: Path) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of `cmd`, in ms.

    On a shared machine the wall time also counts waiting for a core; the CPU time does not.
    """
    # As on a user's machine, compiled modules are kept (a warm-up run writes them): a session that sets
    # PYTHONDONTWRITEBYTECODE would otherwise time compiling edgecli's sources on every run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NO_COLOR="1", COLUMNS="120")
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
        walls.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "edgecli --version": [EDGECLI, "--version"],
            "edgecli --help": [EDGECLI, "--help"],
            "edgecli logs -n 1": [EDGECLI, "logs", "-n", "1"],
            "edgecli invoke": [EDGECLI, "invoke", "hello", "--url", url],
        }
        for cmd in cases.values():  # warm the file cache and write compiled modules
            _median_ms(cmd, 1, root)
        base = 0.0
        print(f"median of {args.runs} runs")
        print(f"{'command':<20} {'wall ms':>8} {'cpu ms':>8} {'wall minus python':>18}")
        for name, cmd in cases.items():
            wall, cpu = _median_ms(cmd, args.runs, root)
            base = base or wall
            print(f"{name:<20} {wall:>8.0f} {cpu:>8.0f} {wall - base:>18.0f}")
    server.shutdown()


if __name__ == "__main__":
    main()
