"""What the `edge` fixture costs a test: per-test overhead with a shared server, and the first test's start.

    python bench/bench_testing.py [--tests 100] [--rounds 3] [--json]

Each round runs two nested pytest sessions on the demo project (`supabase/` at the repo root), each of
`--tests` tests that invoke `hello` once:

- **httpx**: the tests share one httpx client and call an `edgecli serve` the benchmark started before
  the session (the same flags the fixture uses), so no test pays for a server;
- **edge**: the tests use the `edge` fixture, which starts its server in the first test and shares it.

A conftest records each test's wall time (setup + call + teardown). Per-test overhead = the median over
tests 2..N with `edge` minus the same median with httpx (target: <= 20 ms). The first test's server start
= that test's time with `edge` minus the httpx median, beside the time a bare `edgecli serve` takes to
answer its first request in the same round (target: <= 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from _servers import free_port

REPO = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD_MS = 20.0
TARGET_START_S = 1.0

CONFTEST = """\
import json, os, time
import pytest

TIMES = []

@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        TIMES.append(time.perf_counter() - started)

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as f:
        json.dump(TIMES, f)
"""
EDGE_TESTS = """\
import pytest

@pytest.mark.parametrize("n", range({tests}))
def test_hello(edge, n):
    assert edge.invoke("hello", json={{"name": "bench"}}).status_code == 200
"""
HTTPX_TESTS = """\
import os
import httpx
import pytest

@pytest.fixture(scope="session")
def client():
    with httpx.Client(base_url=os.environ["BENCH_URL"]) as c:
        yield c

@pytest.mark.parametrize("n", range({tests}))
def test_hello(client, n):
    auth = {{"authorization": os.environ["BENCH_KEY"]}}
    assert client.post("/functions/v1/hello", json={{"name": "bench"}}, headers=auth).status_code == 200
"""


def run_session(folder: Path, test_file: str, env: dict[str, str]) -> list[float]:
    times = folder / "times.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    cmd += ["-o", f"edge_workdir={REPO}", "--rootdir", str(folder), str(folder / test_file)]
    done = subprocess.run(
        cmd, cwd=folder, env={**env, "BENCH_TIMES": str(times)}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"nested pytest failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return list(json.loads(times.read_text()))


def start_serve(env: dict[str, str], state: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    """A bare `edgecli serve` as the fixture runs it; returns it, its URL and how long it took to answer."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(REPO), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--json", "--no-reload"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "EDGECLI_STATE_DIR": str(state)},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(f"{url}/functions/v1/", timeout=1.0)
            return proc, url, time.perf_counter() - started
        except httpx.TransportError:
            if proc.poll() is not None or time.perf_counter() - started > 60:
                raise SystemExit("edgecli serve did not start") from None
            time.sleep(0.01)


def one_round(tests: int) -> dict[str, float]:
    from edgecli.config import load_config
    from edgecli.host.auth import make_key

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EDGECLI_"))}
    key = make_key(load_config(REPO).jwt_secret, "anon")
    with tempfile.TemporaryDirectory(prefix="bench-testing-") as tmp:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_edge.py").write_text(EDGE_TESTS.format(tests=tests))
        (folder / "test_httpx.py").write_text(textwrap.dedent(HTTPX_TESTS.format(tests=tests)))
        proc, url, serve_start = start_serve(env, folder / "state")
        try:
            plain = run_session(
                folder, "test_httpx.py", {**env, "BENCH_URL": url, "BENCH_KEY": f"Bearer {key}"}
            )
        finally:
            proc.terminate()
            proc.wait(30)
        edge = run_session(folder, "test_edge.py", env)
    base = statistics.median(plain[1:])
    return {
        "httpx_ms": base * 1000,
        "edge_ms": statistics.median(edge[1:]) * 1000,
        "overhead_ms": (statistics.median(edge[1:]) - base) * 1000,
        "first_test_start_s": edge[0] - base,
        "bare_serve_start_s": serve_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = [one_round(args.tests) for _ in range(args.rounds)]
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    if args.json:
        print(json.dumps({"rounds": rounds, "median": summary}))
        return
    for i, r in enumerate(rounds, 1):
        print(
            f"round {i}: per test httpx {r['httpx_ms']:.1f} ms, edge {r['edge_ms']:.1f} ms, overhead "
            f"{r['overhead_ms']:.1f} ms; first test's server start {r['first_test_start_s']:.2f} s "
            f"(bare serve {r['bare_serve_start_s']:.2f} s)"
        )
    ok_overhead = "ok" if summary["overhead_ms"] <= TARGET_OVERHEAD_MS else "MISSED"
    ok_start = "ok" if summary["first_test_start_s"] <= TARGET_START_S else "MISSED"
    print(
        f"median of {args.rounds} rounds: overhead {summary['overhead_ms']:.1f} ms per test "
        f"(target <= {TARGET_OVERHEAD_MS:g}: {ok_overhead}), first test's server start "
        f"{summary['first_test_start_s']:.2f} s (target <= {TARGET_START_S:g}: {ok_start}; "
        f"bare serve {summary['bare_serve_start_s']:.2f} s, ratio "
        f"{summary['first_test_start_s'] / summary['bare_serve_start_s']:.2f})"
    )


if __name__ == "__main__":
    main()
