"""Micro-benchmarks behind hot-path choices (bench/README.md, "Throughput with verify_jwt on...", "The hop's
per-request Python...").

    python bench/micro_hotpath.py store [--batch 30] [--prefill 100000]
    python bench/micro_hotpath.py json [--also SRC]
    python bench/micro_hotpath.py request [--also SRC] [--rounds 3]

`store`: CPU per event of `StoreWriter.write` on a store prefilled with request events, for request ids
drawn at random (uuid4) and in order (as serve's are), with the request index or no secondary index.
`json`: the JSON work of one request on each side of the worker socket (`ipc.encode_scope` and the
response start), for this tree and, with `--also`, another checkout (run in a process of its own).
`request`: the Python of one hello-world request's hop that can be timed apart from the sockets: in
serve, the relay reading the client's headers, the scope out, the response start in and the request's
record (its event, terminal line and store row); in the worker, the scope in, the channel and the
response start out. The checkouts take turns in fresh processes, `--rounds` times; best of each.
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


def request_side(src: Path) -> None:
    sys.path.insert(0, str(src))
    import io

    from rich.console import Console

    from edgecli import events, ipc
    from edgecli.console import Output
    from edgecli.host import relay
    from edgecli.printer import EventPrinter
    from edgecli.runtime.channels import Channel

    token = b"Bearer " + b"x" * 170
    raw = [(b"host", b"127.0.0.1:54321"), (b"user-agent", b"wrk"), (b"authorization", token)]
    scope = {
        "type": "http",
        "path": "/functions/v1/hello",
        "raw_path": b"/functions/v1/hello",
        "root_path": "",
        "query_string": b"",
        "method": "GET",
        "scheme": "http",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 54321),
        "headers": raw,
    }
    rid = "1a2b3c4d-0000-8000-8000-000000000000"
    message = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"26")]}
    start = ipc.start_frame(1, message)[ipc.HEADER.size :]
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor")
    printer = EventPrinter(Output(out=console, err=console), json_output=False, functions=["hello"])

    def headers_in() -> None:
        if hasattr(relay.Relay, "request_id"):  # the tree before: the request id in a pass of its own
            relay.Relay.request_id(scope)
        relay.inbound(raw)

    def scope_out() -> None:
        inner = dict(scope, root_path=relay.ROOT_PATH, headers=raw)
        ipc.encode_scope(inner, rid)

    def start_in() -> None:
        msg = ipc.loads(start)
        ipc.decode_headers(msg["headers"])

    def record() -> None:
        event = events.request("GET", scope["path"], 200, 1.23, function="hello", worker="w1", request=rid)
        printer.format(event)
        event.to_row_json()

    payload = ipc.encode_scope(dict(scope, root_path=relay.ROOT_PATH), rid)
    calls = 20000
    serve = {
        "headers": best_us(headers_in, calls),
        "scope out": best_us(scope_out, calls),
        "start in": best_us(start_in, calls),
        "record": best_us(record, calls),
    }
    worker = {
        "scope in": best_us(lambda: ipc.decode_scope(payload), calls),
        "channel": best_us(Channel, calls),
        "start out": best_us(lambda: ipc.start_frame(1, message), calls),
    }
    for side, parts in (("serve", serve), ("worker", worker)):
        detail = ", ".join(f"{name} {us:.1f}" for name, us in parts.items())
        print(f"  {src.name:>8} {side:<6} {sum(parts.values()):5.1f} µs ({detail})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["store", "json", "json-one", "request", "request-one"])
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--prefill", type=int, default=100_000)
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="SRC")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "store":
        store(args.batch, args.prefill)
    elif args.part == "json-one":
        json_side(args.src)
    elif args.part == "request-one":
        request_side(args.src)
    elif args.part == "request":
        for _ in range(args.rounds):
            for src in [ROOT, *args.also]:
                cmd = [sys.executable, __file__, "request-one", "--src", str(src.resolve())]
                subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())
    else:
        for src in [ROOT, *args.also]:  # each in a fresh process: one edgecli per interpreter
            cmd = [sys.executable, __file__, "json-one", "--src", str(src.resolve())]
            subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
