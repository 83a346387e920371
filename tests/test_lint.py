"""ruff and mypy are part of the suite, so "the whole suite passes" includes a clean lint and type check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=170, check=False
    )


@pytest.mark.timeout(60)
def test_ruff_check_is_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", ".")  # configuration in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(180)
def test_mypy_is_clean() -> None:
    result = run_tool("mypy")  # checks the packages listed in pyproject.toml's [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr
