"""Event store benchmark: how many events/s the store absorbs, and what it costs the serve loop.

    python bench/bench_events.py [--events 200000] [--rate 20000] [--seconds 8] [--rounds 8]
                                 [--serve-seconds 2] [--serve-rounds 10] [--lines 19] [--connections 2,16]
                                 [--paced-events 20000] [--paced-connections 16] [--reader-events 200000]
                                 [--parts burst,sustained,serve,paced,readers] [--also DIR]

1. burst    — emit N events into serve's StoreFeed as fast as one loop pass can (workers' events: they
              arrive as rows); report the emit cost, how long the store process takes to commit them
              all, and check that every one is in the store (none dropped).
2. sustained — on an asyncio loop (like serve's), emit `rate` events/s while the same loop runs a fixed
              request-sized unit of work; compare each unit's time against the same loop with no store,
              in alternating rounds so both see the same machine load. That is the latency the store
              adds to work done on serve's loop (the store process competes for a core).
3. serve    — two `edgecli serve --policy per_worker` processes with a function that prints `lines`
              lines per request (each its own log event, plus the request event): one as shipped, one
              with the store replaced by a null sink. Both are loaded in alternating rounds, each round
              starting with the other one (wrk when
              installed, else bench/_load.py) at each connection count; the difference is what the
              store adds to real per_worker requests, at the events/s the store then absorbs. The same
              again with a function that prints nothing (one event per request: the usual case).
4. paced    — the issue's condition as stated (20,000 events/s absorbed, at most 5 % added to request
              latency): the noisy function paced at `paced-events` events/s (20,000 / (lines + 1)
              requests/s) by bench/_load.py, latency counted from when each request was due. One server,
              its store switched off and on by signals between rounds (a launcher in this script;
              nothing in edgecli changes), so the same process, worker and memory run both ways; each
              round also loads it with the store off a second time: how far that lands from the first
              is the noise floor to read the figure by.

5. readers  — a store of `reader-events` events (logs, requests, tasks of ten functions) written by the
              store process; the median wall and CPU time of `edgecli logs`, `logs --function F` and
              `tasks --json`, each a fresh process, as a user runs them, and of importing the CLI.
6. indexes  — SQLite's CPU per event written and deleted, and the readers' queries on that many
              events, with no secondary index, with two and with all of the schema's (this tree only).

`--also DIR` runs each part a second time, right after this tree's, with DIR (another checkout, e.g.
the tree before a change) first on PYTHONPATH: side by side in the same run. The script runs against
the store format 3 package layout as well as the current one.

Each run uses a fresh store in a temporary directory with the default retention (200,000 events), so
the burst also pays for retention trimming once the store is full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import have_wrk, run_load
from _servers import Server, free_port, settle, stop_all

from edgecli.config import DEFAULT_EVENT_RETENTION
from edgecli.events import Event, EventSink

try:
    from edgecli.store.feed import StoreFeed

    def make_feed(path: Path, retention: int) -> StoreFeed:
        return StoreFeed(path, retention, 100_000)  # bounded by count only, as before
except ImportError:  # the tree before the store package (--also)
    from edgecli.host.store_feed import StoreFeed  # type: ignore[no-redef]

    def make_feed(path: Path, retention: int) -> StoreFeed:
        return StoreFeed(path, retention=retention)  # type: ignore[call-arg]


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


def _batches(conn: sqlite3.Connection) -> bool:
    """Whether the store is format 3 (a row per batch of events)."""
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_batches'").fetchone())


def stored_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        sql = (
            "SELECT coalesce(sum(last - first + 1), 0) FROM event_batches"
            if _batches(conn)
            else ("SELECT count(*) FROM events")
        )
        return int(conn.execute(sql).fetchone()[0])


def burst(events: int, workdir: Path) -> None:
    path = workdir / "burst.db"
    feed = make_feed(path, max(events, DEFAULT_EVENT_RETENTION))
    row = Event.from_row_json(SAMPLE.to_row_json())  # as a worker's event reaches serve: with its row

    async def emit_all() -> float:
        started = time.perf_counter()
        for _ in range(events):
            feed.emit(row)
        return time.perf_counter() - started

    started = time.perf_counter()
    emitted = asyncio.run(emit_all())
    feed.close()
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
        feed = make_feed(path, DEFAULT_EVENT_RETENTION)
        timings, sent = asyncio.run(paced(feed, rate, seconds / rounds))
        feed.close()
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


NOISY_FUNCTION = """\
import asyncio
from starlette.responses import JSONResponse

async def handler(req):
    for i in range({lines}):
        print("working on step", i)
        await asyncio.sleep(0)  # the runtime groups a burst of writes into one event: one line per burst
    return JSONResponse({{"ok": True}})
"""
# serve with the store swapped for a sink that drops everything: the same process minus the store.
WITHOUT_STORE = """\
import sys
import edgecli.host.server as server

class NullStore:
    def __init__(self, *args, **kwargs): pass
    def emit(self, event): pass
    def close(self): pass

server.StoreFeed = NullStore
from edgecli.cli import main
main()
"""
# serve with the store as shipped, which SIGUSR2 switches off (events go no further than serve) and
# SIGUSR1 on again: the same process, worker and memory with and without the store, so that what
# differs between two servers (up to ~10 % here between identical ones) drops out of the comparison.
SWITCHED_STORE = """\
import signal
import edgecli.host.server as server
try:
    from edgecli.store.feed import StoreFeed
except ImportError:
    from edgecli.host.store_feed import StoreFeed

class SwitchedStore:
    def __init__(self, *args, **kwargs):
        self.feed = StoreFeed(*args, **kwargs)
        self.on = True
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "on", True))
        signal.signal(signal.SIGUSR2, lambda *_: setattr(self, "on", False))
    def emit(self, event):
        if self.on:
            self.feed.emit(event)
    def close(self):
        self.feed.close()

server.StoreFeed = SwitchedStore
from edgecli.cli import main
main()
"""


def serve_scenario(tmp: Path, name: str, lines: int, store: bool | None) -> Server:
    """`store`: as shipped (True), a null sink (False), or switched on and off by signals (None)."""
    root = tmp / name
    (root / "supabase" / "functions" / "noisy").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text('[edge_runtime]\npolicy = "per_worker"\n')
    (root / "supabase" / "functions" / "noisy" / "index.py").write_text(NOISY_FUNCTION.format(lines=lines))
    port = free_port()
    launcher = {None: ["-c", SWITCHED_STORE], True: ["-m", "edgecli"], False: ["-c", WITHOUT_STORE]}[store]
    cmd = [sys.executable, *launcher, "serve", "--workdir", str(root), "--port", str(port), "--no-verify-jwt"]
    return Server(name, cmd, f"http://127.0.0.1:{port}/functions/v1/noisy", tmp / f"{name}.log")


Rounds = dict[str, list[tuple[float, float, float]]]  # "with"/"without" -> (req/s, p50 ms, p99 ms) per round


def serve(args: argparse.Namespace, workdir: Path, lines: int) -> None:
    """Both servers for `lines`, compared at each connection count in turn."""
    name = f"{lines}-lines"
    with_store = serve_scenario(workdir, f"with-store-{name}", lines, store=True)
    without = serve_scenario(workdir, f"without-store-{name}", lines, store=False)
    pair = {"without": without, "with": with_store}
    db = workdir / f"with-store-{name}" / "supabase" / ".temp" / "edgecli" / "events.db"
    tool = "wrk" if have_wrk() else "python"
    servers = [with_store, without]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        for connections in args.connections:
            rounds = f"{tool}, {args.serve_rounds} rounds of {args.serve_seconds:g} s each way"
            print(f"serve: per_worker, {lines} printed lines + 1 request event per request, "
                  f"{connections} connections ({rounds})")  # fmt: skip
            results, stored_rates = compare(pair, servers, db, tool, connections, args)
            report_comparison(results, stored_rates)
    finally:
        stop_all(servers)


def serve_paced(args: argparse.Namespace, workdir: Path, lines: int) -> None:
    """The issue's own condition: events arriving at a set rate, not a server pushed to its limit (where
    latency is only the inverse of throughput); latency counts from when a request was due. One server,
    its store switched off and on between rounds; a second "off" in every round is the noise floor."""
    name = f"switched-{lines}-lines"
    server = serve_scenario(workdir, name, lines, store=None)
    db = workdir / name / "supabase" / ".temp" / "edgecli" / "events.db"
    rate = args.paced_events / (lines + 1)
    rounds = f"python, {args.serve_rounds} rounds of {args.serve_seconds:g} s each way"
    print(f"serve: per_worker, {lines} printed lines + 1 request event per request, paced at "
          f"{rate:,.0f} req/s = {args.paced_events:,} events/s, {args.paced_connections} connections, "
          f"one server with its store switched on and off ({rounds})")  # fmt: skip
    states = {"without": signal.SIGUSR2, "with": signal.SIGUSR1, "control": signal.SIGUSR2}
    results: Rounds = {label: [] for label in states}
    stored_rates = []
    try:
        server.start()
        server.wait_ready()
        run_load("python", server.url, args.paced_connections, 1.0, 2, rate)  # warm up
        order = list(states.items())
        for round_ in range(args.serve_rounds):
            shift = round_ % len(order)
            for label, sig in order[shift:] + order[:shift]:
                assert server.proc is not None
                os.kill(server.proc.pid, sig)
                settle([server])
                before = last_id(db)
                load = run_load("python", server.url, args.paced_connections, args.serve_seconds, 2, rate)
                results[label].append((load.rps, load.p50_ms, load.p99_ms))
                state = {"with": "store on", "without": "store off", "control": "off again"}[label]
                print(f"    {state:<13} {load.rps:8,.0f} req/s  "
                      f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms", flush=True)  # fmt: skip
                if label == "with":
                    settle([server])
                    stored_rates.append((last_id(db) - before) / load.seconds)
    finally:
        stop_all([server])
    report_comparison(results, stored_rates, control="the store off again")


def compare(
    loaded: dict[str, Server],
    servers: list[Server],
    db: Path,
    tool: str,
    connections: int,
    args: argparse.Namespace,
    rate: float = 0,
) -> tuple[Rounds, list[float]]:
    """Load each of `loaded` once per round; `servers` (all that run) must be idle before each load."""
    results: Rounds = {label: [] for label in loaded}
    stored_rates = []
    order = list(loaded.items())
    for round_ in range(args.serve_rounds):
        # Each round starts with another server: whichever runs first in a round measured up to ~10 %
        # apart from an identical second one on a shared 2-core machine.
        shift = round_ % len(order)
        for label, server in order[shift:] + order[:shift]:
            settle(servers)
            before = last_id(db)
            load = run_load(tool, server.url, connections, args.serve_seconds, 2, rate)
            results[label].append((load.rps, load.p50_ms, load.p99_ms))
            print(f"    {label + ' store':<13} {load.rps:8,.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
                  f"p99 {load.p99_ms:6.2f} ms", flush=True)  # fmt: skip
            if label == "with":
                settle(servers)
                stored_rates.append((last_id(db) - before) / load.seconds)
    return results, stored_rates


def report_comparison(results: Rounds, stored_rates: list[float], control: str = "") -> None:
    """Medians, and the median of each round's with/without ratio (a round's pair ran back to back, so
    the ratio is the figure least moved by whatever else the machine is doing)."""
    for index, metric in ((0, "req/s"), (1, "p50 ms"), (2, "p99 ms")):
        base = statistics.median(r[index] for r in results["without"])
        load = statistics.median(r[index] for r in results["with"])
        change = _paired_change(results["with"], results["without"], index)
        line = f"  {metric:<7} {base:9.2f} without store, {load:9.2f} with (paired rounds: {change:+.1f} %)"
        if "control" in results:
            noise = _paired_change(results["control"], results["without"], index)
            line += f"; {control}: {noise:+.1f} %"
        print(line)
    print(f"  the store absorbed {statistics.median(stored_rates):,.0f} events/s in the loaded rounds")


def _paired_change(
    these: list[tuple[float, float, float]], base: list[tuple[float, float, float]], index: int
) -> float:
    return (statistics.median(t[index] / b[index] for t, b in zip(these, base, strict=True)) - 1) * 100


def last_id(path: Path) -> int:
    """Events ever stored (ids only grow; a count would stop at the retention)."""
    with sqlite3.connect(path) as conn:
        sql = (
            "SELECT coalesce(max(last), 0) FROM event_batches"
            if _batches(conn)
            else ("SELECT coalesce(max(id), 0) FROM events")
        )
        return int(conn.execute(sql).fetchone()[0])


def reader_events(count: int) -> list[Event]:
    """Events shaped like a busy project's: ten functions, requests with their logs, background tasks."""
    events = []
    now = time.time() - count / 1000
    for i in range(count):
        function = f"fn{i // 20 % 10}"  # a request's events (and its task's) are one function's
        request = f"req-{i // 20:08d}"
        ts = now + i / 1000
        if i % 20 == 0:
            events.append(Event("task_start", "task job started", function=function, request=request,
                                task=f"{function}.t-{i}", ts=ts, fields={"name": "job"}))  # fmt: skip
        elif i % 20 == 1:
            fields = {"name": "job", "status": "completed", "duration_ms": 3.0, "error": None, "reason": None}
            events.append(Event("task_end", "task job completed", function=function, request=request,
                                task=f"{function}.t-{i - 1}", ts=ts, fields=fields))  # fmt: skip
        elif i % 20 == 19:
            fields = {"method": "GET", "path": "/", "status": 200, "duration_ms": 1.5}
            events.append(
                Event("request", "GET / 200", function=function, request=request, ts=ts, fields=fields)
            )
        else:
            events.append(
                Event("log", f"working on step {i % 20}", function=function, request=request, ts=ts)
            )
    return events


def readers(count: int, workdir: Path, runs: int = 5) -> None:
    """The wall time of the reading commands on a store of `count` events, as a user runs them."""
    root = workdir / "readers"
    (root / "supabase" / "functions").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text("[api]\nport = 54321\n")
    db = root / "supabase" / ".temp" / "edgecli" / "events.db"
    feed = make_feed(db, count)
    for event in reader_events(count):
        feed.emit(event)
    feed.close()
    print(f"readers: {stored_count(db):,} events stored; median of {runs} runs, each a fresh process")
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    # CPU time too (user + sys of the child): on a shared machine the wall time moves with the load.
    for command in (["-m", "edgecli", "logs"], ["-m", "edgecli", "logs", "--function", "fn3"],
                    ["-m", "edgecli", "tasks", "--json"], ["-c", "import edgecli.cli"]):  # fmt: skip
        walls, cpus = [], []
        for _ in range(runs):
            before, started = os.times(), time.perf_counter()
            result = subprocess.run([sys.executable, *command], cwd=root, env=env,
                                    capture_output=True, check=True)  # fmt: skip
            walls.append(time.perf_counter() - started)
            after = os.times()
            cpus.append(sum(after[2:4]) - sum(before[2:4]))  # children's user + system
        lines = result.stdout.count(b"\n")
        name = "edgecli " + " ".join(command[2:]) if command[0] == "-m" else "python -c 'import edgecli.cli'"
        print(f"  {name:<30} wall {statistics.median(walls):.3f} s  CPU {statistics.median(cpus):.3f} s "
              f"(min {min(cpus):.3f})  ({lines:,} lines)")  # fmt: skip
    print(f"  load average {os.getloadavg()[0]:.1f}")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events in the burst")
    parser.add_argument("--rate", type=int, default=20_000, help="events/s in the sustained run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the sustained run, each way")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds in the sustained run")
    parser.add_argument("--serve-seconds", type=float, default=2.0, help="length of each serve round")
    parser.add_argument("--serve-rounds", type=int, default=10, help="alternating rounds against serve")
    parser.add_argument("--lines", type=int, default=19, help="lines the served function prints per request")
    parser.add_argument(
        "--connections", type=_ints, default=[2, 16], help="connection counts against serve (e.g. 2,16)"
    )
    parser.add_argument(
        "--paced-events", type=int, default=20_000, help="events/s of the paced serve run (0: skip it)"
    )
    parser.add_argument("--paced-connections", type=int, default=16, help="connections of the paced run")
    parser.add_argument("--reader-events", type=int, default=200_000, help="events in the readers' store")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts, of {','.join(PARTS)}")
    parser.add_argument("--also", type=Path, help="another checkout to run each part with, right after")
    args, _ = parser.parse_known_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.also is not None:
        for part in parts:
            for label, tree in (("this tree", None), (str(args.also), args.also)):
                if part == "indexes" and tree is not None:
                    continue  # this tree's schema only
                print(f"== {part}: {label} ==", flush=True)
                env = {**os.environ, "PYTHONPATH": str(tree.resolve())} if tree else None
                subprocess.run([sys.executable, __file__, *_passed_on(sys.argv[1:]), "--parts", part],
                               env=env, check=True, cwd=tempfile.gettempdir())  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-") as tmp:
        for part in parts:
            run_part(part, args, Path(tmp))


_INDEX_QUERIES = {
    "newest 100": ("SELECT * FROM events ORDER BY id DESC LIMIT 100", []),
    "--function (absent)": ("SELECT * FROM events WHERE function = ? ORDER BY id DESC LIMIT 100", ["zz"]),
    "--request": ("SELECT * FROM events WHERE request = ? ORDER BY id DESC LIMIT 100", ["req-00005000"]),
    "tasks": ("SELECT * FROM events WHERE kind IN ('task_start', 'task_end') ORDER BY id", []),
    "--level error": ("SELECT * FROM events WHERE level = 'error' ORDER BY id DESC LIMIT 100", []),
}


def indexes(count: int, workdir: Path) -> None:
    """SQLite's CPU per event written and deleted, and the readers' queries, by the secondary indexes the
    events table has (this tree's schema only)."""
    from edgecli.store import schema
    from edgecli.store.writer import parse_rows

    rows, _ = parse_rows(b"".join(event.to_row_json() + b"\n" for event in reader_events(count)))
    table, *creates = schema._SCHEMA.split(";")[:-1]
    named = {create.split()[2]: create for create in creates if "CREATE INDEX" in create}
    insert = "INSERT INTO events (ts, kind, function, worker, request, task, level, message, extra) VALUES "
    print(f"indexes: {count:,} events written 2,000 a transaction, half deleted and written again")
    for label, names in (
        ("none", []),
        ("request, task", ["events_request", "events_task"]),
        ("all", list(named)),
    ):
        conn = sqlite3.connect(workdir / f"indexes-{len(names)}.db")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(";".join([table, *(named[name] for name in names)]))
        cpu = time.process_time()
        for start in range(0, len(rows), 2000):
            with conn:
                conn.executemany(insert + "(?, ?, ?, ?, ?, ?, ?, ?, ?)", rows[start : start + 2000])
        written = (time.process_time() - cpu) / len(rows) * 1e6
        cpu = time.process_time()
        with conn:
            conn.execute("DELETE FROM events WHERE id <= ?", (len(rows) // 2,))
        deleted = (time.process_time() - cpu) / (len(rows) // 2) * 1e6
        with conn:
            conn.executemany(insert + "(?, ?, ?, ?, ?, ?, ?, ?, ?)", rows[: len(rows) // 2])
        timings = []
        for name, (sql, params) in _INDEX_QUERIES.items():
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                conn.execute(sql, params).fetchall()
                runs.append(time.perf_counter() - started)
            timings.append(f"{name} {statistics.median(runs) * 1e3:.0f} ms")
        conn.close()
        print(
            f"  {label:<14} insert {written:.2f} µs, delete {deleted:.2f} µs per event (CPU); "
            + ", ".join(timings)
        )


def _passed_on(argv: list[str]) -> list[str]:
    """The command line without --also and --parts (and their values)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--also", "--parts"):
            skip = True
        elif not arg.startswith(("--also=", "--parts=")):
            kept.append(arg)
    return kept


PARTS = ("burst", "sustained", "serve", "paced", "readers", "indexes")


def run_part(part: str, args: argparse.Namespace, tmp: Path) -> None:
    if part == "burst":
        burst(args.events, tmp)
    elif part == "sustained":
        sustained(args.rate, args.seconds, args.rounds, tmp)
    elif part == "serve":
        for lines in (0, args.lines):
            serve(args, tmp, lines)
    elif part == "paced":
        serve_paced(args, tmp, args.lines)
    elif part == "readers":
        readers(args.reader_events, tmp)
    elif part == "indexes":
        indexes(args.reader_events, tmp)


if __name__ == "__main__":
    main()
