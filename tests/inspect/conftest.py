"""Shared by the inspection tests: a throwaway project, events written straight into its store, and the
real `edgecli` CLI run in a subprocess."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from inspect_helpers import CliRunner, EventWriter, cli_command, cli_env, store_of
from serving import rows

from edgecli.events import Event
from edgecli.store.writer import StoreWriter


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "supabase" / "functions").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text('project_id = "proj"\n\n[api]\nport = 54321\n')
    return root


@pytest.fixture
def write_events(project: Path) -> EventWriter:
    """Write events to the project's store the way serve does (StoreWriter), committed on return."""

    def write(events: Iterable[Event]) -> None:
        writer = StoreWriter(store_of(project), 1_000_000, 1 << 30)
        writer.write(rows(*events))
        writer.close()

    return write


@pytest.fixture
def cli(project: Path) -> CliRunner:
    """Run `edgecli ARGS...` in the project directory; returns the completed process (text)."""

    def run(
        *args: str,
        stdin: str | None = None,
        timeout: float = 60,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(*args),
            cwd=cwd or project,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**cli_env(), **(env or {})},
        )

    return run
