"""Event store benchmark: how many events/s StoreWriter absorbs, and what it costs the serve loop.

    python bench/bench_events.py [--events 200000] [--rate 20000] [--seconds 8] [--rounds 8]

1. burst    — emit N events as fast as one thread can; report the emit cost, how long the writer thread
              takes to commit them all, and check that every one is in the store (none dropped).
2. sustained — on an asyncio loop (like serve's), emit `rate` events/s while the same loop runs a fixed
              request-sized unit of work; compare each unit's time against the same loop with no store,
              in alternating rounds so both see the same machine load. That is the latency the store
              adds to work done on serve's loop (the writer thread competes for the GIL and a core).

Each run uses a fresh store in a temporary directory with the default retention (200,000 events), so
the burst also pays for retention trimming once the store is full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from edgecli.config import DEFAULT_EVENT_RETENTION
from edgecli.events import Event, EventSink, StoreWriter

# Shaped like a worker's log line: every base field set, a short message.
SAMPLE = Event(
    "log",
    "job 3f9c2d1e: step 2/3 done",
    function="background",
    worker="background-7f3a9b",
    request="9f8e7d6c5b4a43218765012345678901",
    task="background-7f3a9b.t-12",
)
REQUEST_PAYLOAD = {"user": {"id": 42, "name": "Ada", "tags": ["a", "b", "c"] * 10}, "items": list(range(100))}


class NullSink:
    def emit(self, event: Event) -> None:
        pass


def stored_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def burst(events: int, workdir: Path) -> None:
    path = workdir / "burst.db"
    writer = StoreWriter(path, retention=max(events, DEFAULT_EVENT_RETENTION))
    started = time.perf_counter()
    for _ in range(events):
        writer.emit(SAMPLE)
    emitted = time.perf_counter() - started
    writer.close()
    drained = time.perf_counter() - started
    count = stored_count(path)
    print(f"burst: {events:,} events")
    per_event = emitted / events * 1e6
    print(f"  emit cost         {per_event:.2f} µs/event ({events / emitted:,.0f} events/s enqueued)")
    print(f"  all committed in  {drained:.2f} s  ->  {events / drained:,.0f} events/s absorbed")
    print(f"  stored            {count:,} ({'none dropped' if count == events else 'DROPPED EVENTS'})")


def request_work() -> None:
    """A stand-in for what serve's loop does per request (parse and build JSON bodies)."""
    for _ in range(20):
        json.loads(json.dumps(REQUEST_PAYLOAD))


async def paced(sink: EventSink, rate: int, seconds: float) -> tuple[list[float], int]:
    """Emit `rate` events/s from the loop while timing units of request work on the same loop."""
    emitted = 0
    timings: list[float] = []
    tick = 0.005
    per_tick = max(1, int(rate * tick))
    stop_at = time.perf_counter() + seconds

    async def producer() -> None:
        nonlocal emitted
        next_at = time.perf_counter()
        while time.perf_counter() < stop_at:
            for _ in range(per_tick):
                sink.emit(SAMPLE)
            emitted += per_tick
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def requests() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            request_work()
            timings.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    await asyncio.gather(producer(), requests())
    return timings, emitted


def sustained(rate: int, seconds: float, rounds: int, workdir: Path) -> None:
    """Alternate short rounds without and with the store, so both see the same machine load."""
    means: dict[str, list[float]] = {"without": [], "with": []}
    samples: dict[str, list[float]] = {"without": [], "with": []}
    emitted = stored = 0
    for round_ in range(rounds):
        timings, _ = asyncio.run(paced(NullSink(), rate, seconds / rounds))
        means["without"].append(statistics.fmean(timings))
        samples["without"] += timings
        path = workdir / f"sustained-{round_}.db"
        writer = StoreWriter(path, retention=DEFAULT_EVENT_RETENTION)
        timings, sent = asyncio.run(paced(writer, rate, seconds / rounds))
        writer.close()
        means["with"].append(statistics.fmean(timings))
        samples["with"] += timings
        emitted += sent
        stored += stored_count(path)
    base, load = statistics.median(means["without"]), statistics.median(means["with"])
    base_p99, load_p99 = _p99(samples["without"]), _p99(samples["with"])
    print(f"sustained: {emitted / seconds:,.0f} events/s, {rounds} rounds of {seconds / rounds:g} s each way")
    print(f"  request work mean {base * 1e3:.3f} ms without store, {load * 1e3:.3f} ms with "
          f"({(load / base - 1) * 100:+.1f} %)")  # fmt: skip
    print(f"  request work p99  {base_p99 * 1e3:.3f} ms without store, {load_p99 * 1e3:.3f} ms with "
          f"({(load_p99 / base_p99 - 1) * 100:+.1f} %)")  # fmt: skip
    verdict = "none dropped" if stored == emitted else "DROPPED EVENTS"
    print(f"  stored            {stored:,} of {emitted:,} ({verdict})")


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events in the burst")
    parser.add_argument("--rate", type=int, default=20_000, help="events/s in the sustained run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the sustained run, each way")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds in the sustained run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-") as tmp:
        burst(args.events, Path(tmp))
        sustained(args.rate, args.seconds, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
