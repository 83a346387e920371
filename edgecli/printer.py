"""Event lines: one aligned line per event, or one JSON record per line, for the serve terminal, `logs`,
`tasks show` and `invoke --wait`.

Called on serve's event loop for every event, so lines are built as plain strings with ANSI codes from
Rich's Style (cached per style, `console.Painter`) instead of going through Console.print's render
pipeline. What an event says in words is `render.py`'s.
"""

from __future__ import annotations

import json
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgecli.console import TONE_STYLE, Output, Painter, function_colour
from edgecli.events import Event
from edgecli.render import describe, error_line, short_id

if TYPE_CHECKING:
    import asyncio

_LEVEL_LABEL = {"debug": "DEBUG", "info": "INFO ", "warning": "WARN ", "error": "ERROR"}
_LEVEL_STYLE = {"debug": "dim", "info": "blue", "warning": "bold yellow", "error": "bold red"}
_GUTTER = "    │ "
_SEEN_TRACEBACKS = 64  # how many recent tracebacks are remembered to avoid printing one twice


PRINT_INTERVAL_S = 0.005  # serve's terminal lines (not --json) wait at most this long, to leave in one write


class EventPrinter:
    """An EventSink printing one aligned line per event (or one JSON record per line).

    Columns: time, function (a stable colour each), short worker id, request or task id, level, message.
    A traceback prints once, indented under its line; the same traceback seen again for the same task or
    request (a failed task is logged and then reported by its task_end) is referred back to.
    """

    def __init__(
        self,
        output: Output,
        *,
        json_output: bool,
        with_date: bool = False,
        functions: Sequence[str] = (),
    ) -> None:
        self._file = output.out.file
        self._json = json_output
        self._lines: list[str] = []  # formatted, not yet written: see emit
        self._timer: asyncio.Handle | None = None  # the flush the held lines wait for
        self._paint = Painter(output.out)
        self._dim = self._paint.codes("dim")
        self._levels = {
            level: self._paint(label, _LEVEL_STYLE[level]) for level, label in _LEVEL_LABEL.items()
        }
        self._with_date = with_date
        self._fn_width = min(24, max([10, *(len(f) for f in functions)]))
        self._ref_width = 18  # "task " + a typical "<worker>.t-<n>" id; grows for longer ones
        self._who: dict[tuple[str, str | None], str] = {}  # painted function + worker columns
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._clock: tuple[int, str] = (-1, "")

    def emit(self, event: Event) -> None:
        line = json.dumps(event.to_record(), default=str) if self._json else self.format(event)
        self._lines.append(line)
        if self._timer is not None:
            return
        # On serve's loop, lines for a person go out in one write every PRINT_INTERVAL_S: never held back
        # longer than anyone can see, and a function printing a line at a time (each arriving in a loop
        # pass of its own) does not cost serve a write syscall per line. JSON records are for programs,
        # which may read them side by side with the HTTP responses (a test looking for a request's log
        # line once it has the response): they leave at the end of the loop pass that made them. The
        # lines are joined here, not left to stdout's buffer: stdout writes through on every line when
        # it is a terminal (line buffering) or when PYTHONUNBUFFERED is set.
        loop = _running_loop()
        if loop is None:  # off a loop (start-up, shutdown, the inspect commands): now
            self.flush()
            return
        if self._json:
            self._timer = loop.call_soon(self.flush)
        else:
            self._timer = loop.call_later(PRINT_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Write the lines held back (before anything else prints to the terminal, and at the end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        lines.append("")  # every line ends with a newline
        try:
            self._file.write("\n".join(lines))
            self._file.flush()
        except (BrokenPipeError, ValueError):  # stdout went away (a closed pipe): nothing to show
            pass

    def format(self, event: Event) -> str:
        paint = self._paint
        described = describe(event)
        # Task ids print whole (they are short, and `tasks show ID` wants them); request ids are often
        # uuids and print as a prefix, which the --request filters accept.
        ref = (
            f"task {event.task}" if event.task else f"req {short_id(event.request)}" if event.request else ""
        )
        if len(ref) > self._ref_width:
            self._ref_width = min(32, len(ref))
        level = self._levels.get(event.level) or paint(event.level[:5].upper().ljust(5), "")
        opening, closing = self._dim
        message = "".join([paint(text, TONE_STYLE.get(tone, "")) for text, tone in described.headline])
        line = (
            f"{opening}{self._time(event.ts)}{closing} {self._columns(event.function or '', event.worker)} "
            f"{opening}{ref.ljust(self._ref_width)}{closing} {level} {message}"
        )
        if described.detail:
            line += "\n" + self._detail(event, described.detail)
        return line

    def _columns(self, function: str, worker: str | None) -> str:
        """The painted function and worker columns; the same pair recurs on every line, so it is cached."""
        if len(function) > self._fn_width:
            self._fn_width = min(24, len(function))
            self._who.clear()
        key = (function, worker)
        columns = self._who.get(key)
        if columns is None:
            if len(self._who) > 4096:
                self._who.clear()  # workers come and go over a long session
            name = self._paint(function[: self._fn_width].ljust(self._fn_width), function_colour(function))
            columns = f"{name} {self._paint(_short_worker(worker, function).ljust(8), 'dim')}"
            self._who[key] = columns
        return columns

    def _detail(self, event: Event, text: str) -> str:
        gutter = self._paint(_GUTTER, "dim")
        if "Traceback (most recent call last)" in text:
            key = (event.task or event.request or event.worker or "", error_line(text))
            if key in self._seen:
                return gutter + self._paint("(traceback shown above)", "dim")
            self._seen[key] = None
            if len(self._seen) > _SEEN_TRACEBACKS:
                self._seen.popitem(last=False)
        style = "red" if event.level == "error" or event.kind in ("task_end", "boot_error") else ""
        return "\n".join(gutter + self._paint(line, style) for line in text.splitlines())

    def _time(self, ts: float) -> str:
        # Formatting the seconds part once per second keeps the hot path cheap.
        second = int(ts)
        if self._clock[0] != second:
            fmt = "%Y-%m-%d %H:%M:%S" if self._with_date else "%H:%M:%S"
            self._clock = (second, time.strftime(fmt, time.localtime(second)))
        return f"{self._clock[1]}.{int((ts - second) * 1000):03d}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # The inspect commands never import asyncio, and do not pay for it here: without it no loop runs.
    if "asyncio" not in sys.modules:
        return None
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _short_worker(worker: str | None, function: str) -> str:
    """Worker ids often start with their function's name, which has a column of its own."""
    if not worker:
        return ""
    for sep in ("-", ":", "/", "#", "."):
        if function and worker.startswith(function + sep):
            worker = worker[len(function) + 1 :]
            break
    return short_id(worker, 6)
