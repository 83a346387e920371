"""Plain helpers for the inspection tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgecli.config import Config
from edgecli.events import Event

CliRunner = Callable[..., subprocess.CompletedProcess[str]]  # the `cli` fixture
EventWriter = Callable[[Iterable[Event]], None]  # the `write_events` fixture


def store_of(project: Path) -> Path:
    return Config(project_dir=project).events_db


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgecli", *args]


def cli_env() -> dict[str, str]:
    # Plain, unwrapped output whatever the terminal the tests run in.
    # No EDGECLI_STATE_DIR either: the commands read the project's own store unless a test says otherwise.
    dropped = ("FORCE_COLOR", "COLUMNS", "TERM", "EDGECLI_STATE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**env, "NO_COLOR": "1", "TERM": "dumb"}


def log(message: str, *, ago: float = 0.0, **kw: object) -> Event:
    """A `log` event `ago` seconds old."""
    return Event("log", message, ts=time.time() - ago, **kw)  # type: ignore[arg-type]


@contextmanager
def running_cli(project: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`edgecli ARGS` running in the background in `project`, its output readable line by line.
    Whatever the test does, the process does not outlive the `with` block."""
    proc = subprocess.Popen(
        cli_command(*args),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
