"""Per-function dependencies: how long serve takes to answer a function's first request when its
requirements.txt must be installed (first run), when the install is cached (later runs), and with no
requirements.txt at all (the baseline), in the same run. Medians over --rounds.

    .venv/bin/python bench/bench_deps.py [--requirement six] [--rounds 3]

The requirement is installed from whatever index pip is set up with; each "first" round uses a fresh
project, so nothing is cached for it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _servers import Server, free_port, stop_all

FUNCTION = """\
from starlette.responses import PlainTextResponse


async def handler(req):
    return PlainTextResponse("ok")
"""


def make_project(root: Path, requirement: str | None) -> Path:
    functions = root / "supabase" / "functions" / "fn"
    functions.mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text("[edge_runtime]\nmax_parallelism = 1\n")
    (functions / "index.py").write_text(FUNCTION)
    if requirement:
        (functions / "requirements.txt").write_text(requirement + "\n")
    return root


def first_answer(project: Path) -> tuple[float, float | None]:
    """Seconds from starting serve to the function's first 200, and the install time serve logged."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(project), "--port", str(port)]
    cmd += ["--no-verify-jwt", "--no-reload", "--json"]
    server = Server("serve", cmd, f"http://127.0.0.1:{port}/functions/v1/fn", project / "serve.log")
    started = time.perf_counter()
    server.start()
    try:
        server.wait_ready(timeout=300)
        took = time.perf_counter() - started
    finally:
        left = stop_all([server])
        if left:
            print(f"killed leftovers: {left}", file=sys.stderr)
    return took, _install_seconds(server.log_tail(200_000))


def _install_seconds(log: str) -> float | None:
    for line in log.splitlines():
        if line.startswith("{") and "installed dependencies" in line:
            message = json.loads(line)["message"]
            return float(message.rsplit(" in ", 1)[1].removesuffix(" s"))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requirement", default="six")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    first, installs, cached, baseline = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = make_project(Path(tmp) / "baseline", None)
        for n in range(args.rounds):
            project = make_project(Path(tmp) / f"deps{n}", args.requirement)
            took, install = first_answer(project)
            first.append(took)
            if install is not None:
                installs.append(install)
            cached.append(first_answer(project)[0])
            baseline.append(first_answer(base)[0])
    med = statistics.median
    print(f"requirement {args.requirement!r}, {args.rounds} rounds (medians):")
    print(
        f"  first run, install included: {med(first):.2f} s to the first 200 (install {med(installs):.2f} s)"
    )
    print(f"  cached install:              {med(cached):.2f} s ({med(cached) / med(baseline):.2f}x baseline)")
    print(f"  no requirements.txt:         {med(baseline):.2f} s")


if __name__ == "__main__":
    main()
