"""Rendering with Rich, for a person: CLI messages, the serve banner, tables, bodies; and the painting of
text with a style that the event lines (`printer.py`) share.

Commands get an `Output` injected (tests swap in one writing to a buffer), in the style of httpie's
Environment: nothing else in edgecli prints, and every `--json` record goes out through `Output.record`.
What an event says in words (no Rich) is `render.py`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich import box
from rich.cells import cell_len
from rich.console import COLOR_SYSTEMS, Console
from rich.markup import escape
from rich.style import Style
from rich.text import Text


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """`edgecli invoke fn | head`: the reader has all it wanted, which is no failure (exit 0, as
        `Output.records` and the event printer do); Rich's own exits 1."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere, not to a traceback
        raise SystemExit(0)


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    target = file if file is not None else (sys.stderr if stderr else sys.stdout)
    # Not a terminal (a pipe, a test, CI): never wrap lines, never colour.
    is_tty = target.isatty()
    return _Console(file=target, soft_wrap=not is_tty, highlight=False, no_color=not is_tty)


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


# The tones of edgecli.render, as Rich styles.
TONE_STYLE = {"dim": "dim", "good": "green", "warn": "yellow", "bad": "bold red", "accent": "cyan"}
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


def function_colour(name: str) -> str:
    # crc32, not hash(): the colour must be the same in every run and every process.
    return _FUNCTION_COLOURS[zlib.crc32(name.encode()) % len(_FUNCTION_COLOURS)]


class Painter:
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
    publishable_key: str = "",
    secret_key: str = "",
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
    if publishable_key:
        out.print("[dim]publishable key (the new API key for clients):[/dim]")
        out.print(escape(publishable_key), soft_wrap=True)
    if secret_key:
        out.print("[dim]secret key (the new API key for servers; keep it on the server):[/dim]")
        out.print(escape(secret_key), soft_wrap=True)
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
        [(cell, "") if isinstance(cell, str) else (cell[0], TONE_STYLE.get(cell[1], "")) for cell in row]
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
    paint = Painter(console)
    lines = [_table_line([(name, "bold") for name in columns], widths, paint), "─" * total]
    lines += [_table_line(row, widths, paint) for row in styled]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _table_line(cells: Sequence[tuple[str, str]], widths: Sequence[int], paint: Painter) -> str:
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
    return Text(text, style=TONE_STYLE.get(tone, ""))


def print_fields(output: Output, pairs: Sequence[tuple[str, Cell]], *, aligned: bool = True) -> None:
    """`key: value` lines, the keys right-aligned (task details) or, not `aligned`, as HTTP writes its
    headers (a response's)."""
    width = max((len(key) for key, _ in pairs), default=0) if aligned else 0
    for key, value in pairs:
        line = Text(f"{key.rjust(width)}: ", style="dim")
        line.append_text(_cell(value))
        output.out.print(line)


def print_status(output: Output, text: str, tone: str) -> None:
    output.out.print(Text(text, style="bold " + TONE_STYLE.get(tone, "")))


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
        line.append(text, style=TONE_STYLE.get(tone, ""))
    output.out.print(line)
