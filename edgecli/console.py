"""The only module that renders with Rich: CLI messages, and (inspection issue) event lines and tables.

Commands get an `Output` injected (tests swap in one writing to a buffer), in the style of httpie's
Environment: nothing else in edgecli prints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.markup import escape


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
