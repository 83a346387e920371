"""The only module that renders with Rich: CLI messages, event lines, the serve banner, tables.

Commands get an `Output` injected (tests swap in one writing to a buffer), in the style of httpie's
Environment: nothing else in edgecli prints, and every `--json` record goes out through `Output.record`.
What an event says in words (no Rich) is `render.py` beside this module.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.cells import cell_len
from rich.console import COLOR_SYSTEMS, Console
from rich.markup import escape
from rich.style import Style
from rich.text import Text

from edgecli.events import Event

if TYPE_CHECKING:
    import asyncio
from edgecli.render import describe, last_line, short_id


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    target = file if file is not None else (sys.stderr if stderr else sys.stdout)
    # Not a terminal (a pipe, a test, CI): never wrap lines, never colour.
    is_tty = target.isatty()
    return Console(file=target, soft_wrap=not is_tty, highlight=False, no_color=not is_tty)


@dataclass
class Output:
    """Where a command writes: `out` for results, `err` for diagnostics."""

    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))

    def line(self, text: str = "", *, markup: bool = False) -> None:
        self.out.print(text if markup else escape(text))

    def success(self, text: str) -> None:
        self.out.print(f"[green]✓[/green] {escape(text)}")

    def warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(text)}")

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/bold red] {escape(text)}")

    def record(self, record: Mapping[str, Any]) -> None:
        """One `--json` record: a JSON object on a line of its own, written at once."""
        self.records([record])

    def records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """`--json` records, one JSON object a line, in one write."""
        text = "".join(json.dumps(record, default=str) + "\n" for record in records)
        try:
            self.out.file.write(text)
            self.out.file.flush()
        except BrokenPipeError:  # `edgecli tasks --json | head`: the reader has all it wanted
            pass


# --- Event lines: the serve terminal, `logs`, `tasks show`, `invoke --wait`. ---------------------------
#
# Called on serve's event loop for every event, so lines are built as plain strings with ANSI codes from
# Rich's Style (cached per style) instead of going through Console.print's render pipeline.

_TONE_STYLE = {"dim": "dim", "good": "green", "warn": "yellow", "bad": "bold red", "accent": "cyan"}
_LEVEL_LABEL = {"debug": "DEBUG", "info": "INFO ", "warning": "WARN ", "error": "ERROR"}
_LEVEL_STYLE = {"debug": "dim", "info": "blue", "warning": "bold yellow", "error": "bold red"}
_FUNCTION_COLOURS = (
    "cyan",
    "magenta",
    "green",
    "blue",
    "yellow",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_blue",
    "orange3",
    "orchid",
    "spring_green3",
)
_GUTTER = "    │ "
_SEEN_TRACEBACKS = 64  # how many recent tracebacks are remembered to avoid printing one twice


def function_colour(name: str) -> str:
    # crc32, not hash(): the colour must be the same in every run and every process.
    return _FUNCTION_COLOURS[zlib.crc32(name.encode()) % len(_FUNCTION_COLOURS)]


class _Painter:
    """Wraps text in the ANSI codes of a Rich style, or returns it untouched when there is no colour.

    Each style's opening and closing codes are computed once, so painting is one string concatenation.
    """

    def __init__(self, console: Console) -> None:
        self._system = COLOR_SYSTEMS.get(console.color_system or "")
        self._no_color = console.no_color
        self._codes: dict[str, tuple[str, str]] = {}

    def codes(self, style: str) -> tuple[str, str]:
        codes = self._codes.get(style)
        if codes is None:
            codes = ("", "")
            if self._system is not None and style:
                parsed = Style.parse(style)
                if self._no_color:
                    parsed = parsed.without_color
                opening, _, closing = parsed.render("\x00", color_system=self._system).partition("\x00")
                codes = (opening, closing)
            self._codes[style] = codes
        return codes

    def __call__(self, text: str, style: str) -> str:
        opening, closing = self.codes(style)
        return f"{opening}{text}{closing}" if opening and text else text


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
        self._paint = _Painter(output.out)
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
        message = "".join([paint(text, _TONE_STYLE.get(tone, "")) for text, tone in described.headline])
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
            key = (event.task or event.request or event.worker or "", last_line(text))
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


# --- Banner, tables, bodies: ordinary Rich output for commands. ---------------------------------------


def print_banner(
    output: Output,
    *,
    project: str,
    policy: str,
    functions: list[tuple[str, str]],
    anon_key: str,
    service_role_key: str,
    notes: Sequence[str],
    verify_jwt: bool = True,
    reload: bool = True,
) -> None:
    """serve's start-up banner: function URLs as `supabase functions serve` lists them, the keys, a curl
    line to paste for the first function, and how to stop.

    Keys and the curl line are printed without line breaks whatever the terminal's width, so that a
    copy from the terminal pastes them whole.
    """
    out = output.out
    out.print(
        f"[bold]edgecli[/bold] serving [cyan]{escape(project)}[/cyan] · policy [bold]{escape(policy)}[/bold]"
    )
    if functions:
        base = functions[0][1].rsplit("/", 1)[0]
        out.print(f"Serving functions on [bold]{escape(base)}/<function-name>[/bold]")
        for name, url in functions:
            out.print(f" - [{function_colour(name)}]{escape(url)}[/]", soft_wrap=True)
    else:
        out.print("[yellow]No functions to serve[/yellow] — create one with `edgecli new NAME`.")
    # Each key on a line of its own: the anon key then fits a 160-column terminal whole.
    out.print("[dim]anon key (what clients and `edgecli invoke` send):[/dim]")
    out.print(escape(anon_key), soft_wrap=True)
    out.print("[dim]service_role key (bypasses row-level security; keep it on the server):[/dim]")
    out.print(escape(service_role_key), soft_wrap=True)
    if not verify_jwt:
        out.print("[yellow]![/yellow] JWT verification is off (--no-verify-jwt): any caller is let in.")
    for note in notes:
        out.print(f"[yellow]![/yellow] {escape(note)}")
    if functions:
        out.print("[dim]Try it:[/dim]")
        out.print("  " + escape(curl_line(functions[0][1], anon_key if verify_jwt else None)), soft_wrap=True)
    watching = "watching for changes · " if reload else ""
    out.print(f"[dim]{watching}Ctrl-C to stop[/dim]")
    out.file.flush()


def print_draining(output: Output, task_functions: Sequence[str], grace: float) -> None:
    """What serve waits for after Ctrl-C: how many tasks, of which functions, until when."""
    counts = Counter(task_functions)
    total = len(task_functions)
    # Per-function counts only when they tell something: "2 tasks of jobs", "3 tasks of hello (2), jobs".
    alone = len(counts) == 1
    which = ", ".join(name if alone or n == 1 else f"{name} ({n})" for name, n in sorted(counts.items()))
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + grace))
    output.out.print(
        f"[yellow]Stopping:[/yellow] waiting up to {grace:g} s (until {until}) for {total} background "
        f"task{'' if total == 1 else 's'} of {escape(which)} to finish. "
        f"[bold]Ctrl-C again[/bold] stops now and cancels {'it' if total == 1 else 'them'}.",
        soft_wrap=True,
    )
    output.out.file.flush()


def curl_line(url: str, key: str | None) -> str:
    """A ready-to-paste curl call of a function, as Supabase's docs write it."""
    auth = f"--header 'Authorization: Bearer {key}' " if key else ""
    return (
        f"curl -i --request POST '{url}' {auth}--header 'Content-Type: application/json' "
        """--data '{"name":"Functions"}'"""
    )


Cell = str | tuple[str, str]  # plain text, or (text, tone) with the tones of edgecli.render
_GAP = "   "


def print_table(output: Output, columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """A bold header, a rule, then one line per row, columns aligned: built as plain strings, since a
    Rich Table takes ~1 ms a row (`edgecli tasks` on 40,000 tasks: 34 s). Only on a terminal too
    narrow for the rows does Rich's Table render it, folding long cells to fit."""
    styled = [
        [(cell, "") if isinstance(cell, str) else (cell[0], _TONE_STYLE.get(cell[1], "")) for cell in row]
        for row in rows
    ]
    widths = [
        max([cell_len(name), *(cell_len(row[i][0]) for row in styled)]) for i, name in enumerate(columns)
    ]
    total = sum(widths) + len(_GAP) * (len(widths) - 1)
    console = output.out
    if console.is_terminal and total > console.width:
        _print_folded_table(output, columns, rows)
        return
    paint = _Painter(console)
    lines = [_table_line([(name, "bold") for name in columns], widths, paint), "─" * total]
    lines += [_table_line(row, widths, paint) for row in styled]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _table_line(cells: Sequence[tuple[str, str]], widths: Sequence[int], paint: _Painter) -> str:
    """Cells given as (text, Rich style), each padded to its column's width but the last."""
    last = len(cells) - 1
    parts = [
        paint(text, style) + ("" if i == last else " " * (widths[i] - cell_len(text)))
        for i, (text, style) in enumerate(cells)
    ]
    return _GAP.join(parts).rstrip()


def _print_folded_table(output: Output, columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
    output.out.print(table)


def _cell(cell: Cell) -> Text:
    if isinstance(cell, str):
        return Text(cell)
    text, tone = cell
    return Text(text, style=_TONE_STYLE.get(tone, ""))


def print_fields(output: Output, pairs: Sequence[tuple[str, Cell]]) -> None:
    """Aligned `key: value` lines (task details, response headers)."""
    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        line = Text(f"{key.rjust(width)}: ", style="dim")
        line.append_text(_cell(value))
        output.out.print(line)


def print_status(output: Output, text: str, tone: str) -> None:
    output.out.print(Text(text, style="bold " + _TONE_STYLE.get(tone, "")))


def print_body(output: Output, body: str, *, is_json: bool) -> None:
    """A response body; JSON pretty-printed and highlighted."""
    if is_json:
        from rich.json import JSON

        output.out.print(JSON(body, indent=2))
    else:
        output.out.print(Text(body))


def print_summary(output: Output, segments: Sequence[tuple[str, str]]) -> None:
    line = Text()
    for text, tone in segments:
        line.append(text, style=_TONE_STYLE.get(tone, ""))
    output.out.print(line)
