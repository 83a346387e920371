"""Micro-benchmarks behind two hot-path choices (bench/README.md, "Throughput with verify_jwt on...").

    python bench/micro_hotpath.py store [--batch 30] [--prefill 100000]
    python bench/micro_hotpath.py json [--also SRC]

`store`: CPU per event of `StoreWriter.write` on a store prefilled with request events, for request ids
drawn at random (uuid4) and in order (as serve's are), with the request index or no secondary index.
`json`: the JSON work of one request on each side of the worker socket (`ipc.encode_scope` and the
response start), for this tree and, with `--also`, another checkout (run in a process of its own).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """The best of `repeats` CPU timings of `calls` calls, per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def store(batch: int, prefill: int) -> None:
    sys.path.insert(0, str(ROOT))
    from edgecli import events
    from edgecli.store.writer import StoreWriter

    counter = itertools.count(0x1A2B0000)

    def ordered() -> str:
        return f"{next(counter):08x}-{uuid.uuid4()}"[:36]

    def random_id() -> str:
        return str(uuid.uuid4())

    def block(ids: Callable[[], str], count: int) -> list[bytes]:
        rows = [
            events.request(
                "GET", "/functions/v1/hello", 200, 1.2, function="hello", worker="w1", request=ids()
            )
            for _ in range(count)
        ]
        return [event.to_row_json() for event in rows]

    variants = [("random ids", random_id, ()), ("ordered ids", ordered, ())]
    variants.append(("random ids, no request index", random_id, ("request",)))
    variants.append(
        ("ordered ids, no secondary index", ordered, ("function", "request", "task", "kind_level", "ts"))
    )
    for label, ids, dropped in variants:
        with tempfile.TemporaryDirectory() as tmp:
            writer = StoreWriter(Path(tmp) / "events.db", prefill * 2, 1 << 30, report=lambda _: None)
            assert writer._conn is not None
            for index in dropped:
                writer._conn.execute(f"DROP INDEX events_{index}")
            rows = block(ids, prefill)
            for start in range(0, len(rows), 2000):
                writer.write(b"\n".join(rows[start : start + 2000]) + b"\n")
            rows = block(ids, 6000)
            blocks = [b"\n".join(rows[i : i + batch]) + b"\n" for i in range(0, len(rows), batch)]
            started = time.process_time()
            for data in blocks:
                writer.write(data)
            spent = time.process_time() - started
            writer.close()
        print(f"  {label:<34} batches of {batch}: {spent / len(rows) * 1e6:6.1f} µs/event")


def json_side(src: Path) -> None:
    sys.path.insert(0, str(src))
    from edgecli import ipc

    scope = {
        "type": "http",
        "path": "/functions/v1/hello",
        "raw_path": b"/functions/v1/hello",
        "root_path": "/functions/v1",
        "query_string": b"",
        "method": "GET",
        "scheme": "http",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 54321),
        "headers": [
            (b"host", b"127.0.0.1:54321"),
            (b"user-agent", b"wrk"),
            (b"authorization", b"Bearer " + b"x" * 170),
        ],
    }
    start = {"status": 200, "headers": [["content-type", "application/json"], ["content-length", "26"]]}
    scope_payload, start_payload = ipc.encode_scope(scope, "a-request-id"), ipc.dumps(start)
    calls = 20000
    encode_scope = best_us(lambda: ipc.encode_scope(scope, "a-request-id"), calls)
    decode_scope = best_us(lambda: ipc.decode_scope(scope_payload), calls)
    encode_start = best_us(lambda: ipc.dumps(start), calls)
    decode_start = best_us(lambda: ipc.loads(start_payload), calls)
    print(
        f"  {src}: serve {encode_scope + decode_start:5.1f} µs per request (scope out "
        f"{encode_scope:.1f}, start in {decode_start:.1f}); worker {decode_scope + encode_start:5.1f} µs "
        f"(scope in {decode_scope:.1f}, start out {encode_start:.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["store", "json", "json-one"])
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--prefill", type=int, default=100_000)
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="SRC")
    parser.add_argument("--src", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "store":
        store(args.batch, args.prefill)
    elif args.part == "json-one":
        json_side(args.src)
    else:
        for src in [ROOT, *args.also]:  # each in a fresh process: one edgecli per interpreter
            cmd = [sys.executable, __file__, "json-one", "--src", str(src.resolve())]
            subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
