"""Output objects writing into memory, for tests of what edgecli prints for a person."""

from __future__ import annotations

import io
import re

from rich.console import Console

from edgecli.console import Output, make_console

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CountingBuffer(io.StringIO):
    """A non-terminal stdout that counts flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def plain_output() -> tuple[Output, CountingBuffer]:
    """An Output as edgecli makes it for a pipe or a file, and what its stdout received."""
    buffer = CountingBuffer()
    return Output(out=make_console(buffer), err=make_console(io.StringIO())), buffer


def coloured_output() -> tuple[Output, io.StringIO]:
    """An Output for a colour terminal, stdout and stderr into one buffer."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor")
    return Output(out=console, err=console), buffer
