"""CPU per request at a fixed rate: serve, its worker and its store, for this tree and other checkouts.

    python bench/paced_cpu.py --also SRC [--rate 800] [--rounds 4] [--seconds 4] [--connections 16]

Serves the hello-world function of bench_serve.py (per_worker, verify_jwt off, store on) from this tree
and from each `--also` checkout, and loads each in turn at the same paced rate (the Python generator),
the order reversed every round, after one unrecorded round. Closed-loop throughput on a shared machine
moves with the machine, and so does the CPU per request, since a saturated loop answers more requests
per pass: at a fixed rate below every tree's capacity each request costs what its own code costs, and
trees compare in the same rounds. Reported: each round, then the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _load import run_load
from _servers import Server, settle, stop_all
from bench_serve import check_source, edgecli_server


def per_request(server: Server, servers: list[Server], args: argparse.Namespace) -> tuple[float, list[float]]:
    settle(servers)
    before = server.cpu()
    load = run_load("python", server.url, args.connections, args.seconds, 2, args.rate)
    settle(servers)  # the round's log lines and store writes belong to the round
    after = server.cpu()
    n = max(1, load.requests)
    spent = [after.host - before.host, after.workers - before.workers, after.store - before.store]
    return load.rps, [seconds / n * 1e6 for seconds in spent]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="SRC")
    parser.add_argument("--rate", type=float, default=800.0, help="requests/s (default 800)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgecli-bench-paced-") as tmp:
        for src in args.also:
            check_source(src.resolve(), Path(tmp))
        sources: list[Path | None] = [None, *(src.resolve() for src in args.also)]
        servers = [edgecli_server(Path(tmp), "per_worker", src) for src in sources]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            results: dict[str, list[list[float]]] = {server.name: [] for server in servers}
            for round_ in range(args.rounds + 1):  # round 0 warms up
                for server in servers if round_ % 2 else servers[::-1]:
                    rps, us = per_request(server, servers, args)
                    if round_:
                        results[server.name].append(us)
                    print(f"  round {round_} {server.name:<20} {rps:7,.0f} req/s  serve {us[0]:5.0f}  "
                          f"worker {us[1]:5.0f}  store {us[2]:5.0f} µs/request", flush=True)  # fmt: skip
            for name, rows in results.items():
                med = [statistics.median(row[i] for row in rows) for i in range(3)]
                serve, worker, store = med
                print(
                    f"median {name:<20} serve {serve:5.0f}  worker {worker:5.0f}  store {store:5.0f} µs/req"
                )
        except KeyboardInterrupt:
            return 130
        finally:
            stop_all(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
