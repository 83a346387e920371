"""Printing benchmark: what serve's terminal view costs per event line, against Rich's Console.print.

    python bench/bench_printing.py [--lines 5000] [--rounds 5]

serve prints one line per event on its own event loop, so a line's cost is paid by every request. The
printer (edgecli.console.EventPrinter) is measured against the plain baseline a newcomer would write,
`Console.print` of the same text, in the same run; reported as µs per line (medians across rounds) and
their ratio. Target: the printer costs at most as much as the baseline, and under 100 µs a line.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from rich.console import Console

from edgecli.console import Output
from edgecli.events import Event
from edgecli.printer import EventPrinter

BASE = {"function": "hello", "worker": "hello-3", "request": "9f8e7d6c-5b4a-4321-8765-0123456789ab"}
EVENTS = [
    Event("log", "hi from the handler", **BASE),
    Event(
        "request", "", **BASE, fields={"method": "POST", "path": "/hello", "status": 200, "duration_ms": 3.2}
    ),
    Event("log", "careful now", "warning", **BASE),
]


def console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=120)


def per_line_printer(lines: int) -> float:
    out = console()
    printer = EventPrinter(Output(out=out, err=out), json_output=False)
    started = time.perf_counter()
    for i in range(lines):
        printer.emit(EVENTS[i % len(EVENTS)])
    printer.flush()
    return (time.perf_counter() - started) / lines


def per_line_console(lines: int) -> float:
    out = console()
    started = time.perf_counter()
    for i in range(lines):
        event = EVENTS[i % len(EVENTS)]
        out.print(f"{event.level.upper()} {event.function} {event.message}")
    return (time.perf_counter() - started) / lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    printer, baseline = [], []
    for _ in range(args.rounds):
        printer.append(per_line_printer(args.lines))
        baseline.append(per_line_console(args.lines))
    p, b = statistics.median(printer) * 1e6, statistics.median(baseline) * 1e6
    print(f"EventPrinter.emit  {p:8.1f} µs/line")
    print(f"Console.print      {b:8.1f} µs/line")
    print(f"ratio              {p / b:8.2f}x the baseline (target <= 1, and <= 100 µs/line)")


if __name__ == "__main__":
    main()
