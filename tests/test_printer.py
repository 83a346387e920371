"""Event lines: aligned one per event, colours, tracebacks once, JSON lines, one write per loop pass."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time

import pytest
from outputs import ANSI, CountingBuffer, coloured_output, plain_output

import edgecli.printer
from edgecli.console import Output, function_colour, make_console
from edgecli.events import BASE_FIELDS, Event
from edgecli.printer import EventPrinter

pytestmark = pytest.mark.timeout(10)

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "index.py", line 7, in notify\n'
    '    raise ValueError("boom")\n'
    "ValueError: boom"
)


def _events() -> list[Event]:
    base = {"function": "hello", "worker": "hello-3", "request": "9f8e7d6c-5b4a-4321-8765-0123456789ab"}
    return [
        Event("boot", "", **{**base, "request": None}, fields={"boot_ms": 41.7}),
        Event("log", "hi from the handler", **base),
        Event("task_start", "task notify started", **base, task="hello-3.t-1", fields={"name": "notify"}),
        Event(
            "request",
            "",
            **base,
            fields={"method": "POST", "path": "/hello", "status": 200, "duration_ms": 3.2},
        ),
        Event("log", "careful now", "warning", **base, task="hello-3.t-1"),
        Event(
            "task_end",
            "task notify failed: ValueError: boom",
            "error",
            **base,
            task="hello-3.t-1",
            fields={"name": "notify", "status": "failed", "duration_ms": 1500, "error": TRACEBACK},
        ),
        Event("shutdown", "", function="hello", worker="hello-3", fields={"reason": "memory", "cpu_ms": 5}),
    ]


@pytest.mark.timeout(10)
def test_plain_lines_are_aligned_one_per_event_and_flushed_each() -> None:
    output, buffer = plain_output()
    printer = EventPrinter(output, json_output=False)
    events = _events()
    for event in events:
        printer.emit(event)
    lines = buffer.getvalue().splitlines()
    assert not ANSI.search(buffer.getvalue())
    headline_lines = [line for line in lines if not line.startswith("    │")]
    assert len(headline_lines) == len(events)
    assert buffer.flushes == len(events)
    # Time, function, worker, id and level columns line up: every message starts at the same column.
    column = headline_lines[0].index("worker booted")
    assert headline_lines[1].index("hi from the handler") == column
    assert headline_lines[3].index("POST /hello") == column
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} hello +3 +req 9f8e7d6c +INFO  hi from the handler$", lines[1])
    assert "task hello-3.t-1" in headline_lines[2] and "task notify started" in headline_lines[2]
    assert "POST /hello → 200  3.2 ms" in headline_lines[3]
    assert "WARN  careful now" in headline_lines[4]
    assert "ERROR task notify failed after 1.50 s: ValueError: boom" in headline_lines[5]
    assert "worker stopped (memory)" in headline_lines[6]


class WriteCountingBuffer(CountingBuffer):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.mark.timeout(10)
def test_on_a_loop_the_lines_of_a_few_milliseconds_leave_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 ms in serve; room here for a slow machine.
    monkeypatch.setattr(edgecli.printer, "PRINT_INTERVAL_S", 0.2)
    buffer = WriteCountingBuffer()
    output = Output(out=make_console(buffer), err=make_console(io.StringIO()))
    printer = EventPrinter(output, json_output=False)
    events = _events()

    async def main() -> None:
        for event in events[:4]:  # as if each came in a loop pass of its own
            printer.emit(event)
            await asyncio.sleep(0)
        assert buffer.getvalue() == ""  # held, not lost: a line waits at most PRINT_INTERVAL_S
        deadline = time.monotonic() + 5
        while not buffer.getvalue() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (buffer.writes, buffer.flushes) == (1, 1)
        assert len(buffer.getvalue().splitlines()) == 4 and buffer.getvalue().endswith("\n")
        printer.emit(events[4])
        printer.flush()  # serve's shutdown (and its banner) write what is held at once
        assert buffer.getvalue().splitlines()[-1].endswith("careful now")

    asyncio.run(main())
    assert buffer.writes == 2


@pytest.mark.timeout(10)
def test_json_records_on_a_loop_leave_at_the_end_of_the_pass() -> None:
    buffer = WriteCountingBuffer()
    output = Output(out=make_console(buffer), err=make_console(io.StringIO()))
    printer = EventPrinter(output, json_output=True)

    async def main() -> None:
        events = _events()
        printer.emit(events[0])
        printer.emit(events[1])
        assert buffer.getvalue() == ""
        await asyncio.sleep(0)  # the end of this pass
        assert buffer.writes == 1
        assert [json.loads(line)["kind"] for line in buffer.getvalue().splitlines()] == ["boot", "log"]

    asyncio.run(main())


def test_a_traceback_prints_once_indented_under_its_line() -> None:
    output, buffer = plain_output()
    printer = EventPrinter(output, json_output=False)
    logged = Event("log", TRACEBACK, "error", function="hello", task="hello-3.t-1")
    printer.emit(logged)
    printer.emit(_events()[5])  # the task_end of the same task carries the same traceback
    text = buffer.getvalue()
    assert text.count('raise ValueError("boom")') == 1
    assert "    │ Traceback (most recent call last):" in text
    assert "(traceback shown above)" in text
    # Another task failing the same way gets its own traceback.
    printer.emit(Event("log", TRACEBACK, "error", function="hello", task="hello-3.t-2"))
    assert buffer.getvalue().count('raise ValueError("boom")') == 2


def test_long_lines_are_not_wrapped_when_stdout_is_not_a_terminal() -> None:
    output, buffer = plain_output()
    EventPrinter(output, json_output=False).emit(Event("log", "x" * 500, function="hello"))
    assert len(buffer.getvalue().splitlines()) == 1


def test_json_lines_carry_every_record_field() -> None:
    output, buffer = plain_output()
    printer = EventPrinter(output, json_output=True)
    for event in _events():
        printer.emit(event)
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert len(records) == len(_events())
    assert all(set(BASE_FIELDS) <= set(record) for record in records)
    assert records[3]["status"] == 200 and records[3]["ts"].endswith("Z")
    assert records[5]["error"] == TRACEBACK


def test_colours_status_by_class_level_and_function_stably() -> None:
    output, buffer = coloured_output()
    printer = EventPrinter(output, json_output=False)
    for status in (200, 404, 500):
        printer.emit(
            Event(
                "request",
                function="hello",
                request="r",
                fields={"method": "GET", "path": "/", "status": status, "duration_ms": 1},
            )
        )
    printer.emit(Event("log", "bad", "error", function="other"))
    ok, missing, failed, error = buffer.getvalue().splitlines()
    assert "\x1b[32m200" in ok  # green
    assert "\x1b[33m404" in missing  # yellow
    assert "\x1b[1;31m500" in failed  # bold red
    assert "\x1b[1;31mERROR" in error
    assert function_colour("hello") == function_colour("hello")
    assert ANSI.sub("", ok).split()[1] == "hello"
