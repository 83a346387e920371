"""`--help` as a newcomer reads it: no type placeholders, argument names one way, values and defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)
COMMANDS = ("", "init", "new", "serve", "invoke", "logs", "tasks", "tasks show")


def help_of(command: str, cwd: Path, columns: int = 120) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECLI_")}
    env.update(COLUMNS=str(columns), NO_COLOR="1", TERM="dumb")
    result = subprocess.run(
        [sys.executable, "-m", "edgecli", *command.split(), "--help"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cwd = tmp_path_factory.mktemp("help")
    return {command: help_of(command, cwd) for command in COMMANDS}


def test_no_type_placeholders(helps: dict[str, str]) -> None:
    for command, text in helps.items():
        assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", text), command
        assert "BOOLEAN" not in text, command  # a flag takes no value, so none is shown


def test_argument_names_are_written_one_way(helps: dict[str, str]) -> None:
    usages = {command: text.split("Usage: ", 1)[1].splitlines()[0].strip() for command, text in helps.items()}
    assert usages["new"] == "edgecli new [OPTIONS] [NAME]"
    assert usages["serve"] == "edgecli serve [OPTIONS] [NAMES]..."
    assert usages["invoke"] == "edgecli invoke [OPTIONS] NAME"
    assert usages["tasks show"] == "edgecli tasks show [OPTIONS] TASK_ID"
    for usage in usages.values():
        assert "{" not in usage and not re.search(r"\[[a-z]+\]", usage.replace("[OPTIONS]", ""))


def test_values_and_defaults_are_shown(helps: dict[str, str]) -> None:
    assert "debug | info | warning | error" in helps["logs"]
    assert "per_worker | oneshot | per_request" in helps["serve"]
    assert "running | completed | failed | cancelled" in helps["tasks"]
    invoke = " ".join(helps["invoke"].split())  # the default may fold onto a second line
    assert "[default: the running serve's, else http://127.0.0.1:<[api] port>]" in invoke.replace("│ ", "")
    assert "--port" in invoke


def test_completion_options_stay_out_of_the_way(helps: dict[str, str]) -> None:
    assert "--install-completion" not in helps[""]


def test_commands_are_summed_up_whole_in_80_columns(tmp_path: Path) -> None:
    commands = help_of("", tmp_path, columns=80).split("Commands:", 1)[1]
    assert "..." not in commands
    assert "[edge_runtime]" in commands and "[functions.NAME]" in commands
