"""Start-up time of everyday commands, against `python -c pass` in the same run.

    python bench/bench_startup.py [--runs 10] [--against DIR]

Each command runs `--runs` times as a user runs it (the `edgecli` console script, in a fresh process);
the figure is the median wall time, beside Python's own start-up. `logs -n 1` reads a store of a few
events; `invoke` calls a small local HTTP server. The goal (bench/README.md) is 150 ms for each.

`--against DIR` also times another edgecli source tree (e.g. `git archive main | tar -x -C DIR`), both
as `python -m edgecli` with that tree first on sys.path, their runs taking turns, so that a busy machine
weighs on both alike.
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


def _side_by_side(cases: dict[str, list[str]], trees: dict[str, Path], runs: int, cwd: Path) -> None:
    """Each case under each tree, the trees' runs taking turns; medians of wall and CPU time."""
    print(f"median of {runs} runs, the trees taking turns")
    print(f"{'command':<20}" + "".join(f" {name + ' wall/cpu ms':>24}" for name in trees))
    for case, cmd in cases.items():
        if not cmd[0].endswith("edgecli"):
            continue
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(runs):
            for name, tree in trees.items():
                module_cmd = [sys.executable, "-m", "edgecli", *cmd[1:]]
                os.environ["PYTHONPATH"] = str(tree)
                try:
                    results[name].append(_median_ms(module_cmd, 1, cwd))
                finally:
                    del os.environ["PYTHONPATH"]
        row = f"{case:<20}"
        for runs_of_tree in results.values():
            wall = statistics.median(w for w, _ in runs_of_tree)
            cpu = statistics.median(c for _, c in runs_of_tree)
            row += f" {f'{wall:.0f} / {cpu:.0f}':>24}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--against", type=Path, help="another edgecli source tree to time beside this one")
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
        if args.against is not None:
            trees = {"this tree": Path(__file__).resolve().parents[1], "against": args.against.resolve()}
            _side_by_side(cases, trees, args.runs, root)
    server.shutdown()


if __name__ == "__main__":
    main()
