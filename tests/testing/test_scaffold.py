"""A freshly scaffolded project's own tests pass, run the way its developer runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EDGECLI_"))}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.timeout(180)
def test_init_new_new_then_pytest_passes(tmp_path: Path) -> None:
    edgecli = [sys.executable, "-m", "edgecli"]
    for args in (["init"], ["new", "hello"], ["new", "bg", "--template", "background"]):
        done = _run([*edgecli, *args], tmp_path, 60)
        assert done.returncode == 0, done.stderr
    functions = tmp_path / "supabase" / "functions"
    assert (functions / "hello" / "test_hello.py").is_file() and (functions / "bg" / "test_bg.py").is_file()
    done = _run([sys.executable, "-m", "pytest", "-p", "no:randomly", "supabase/functions"], tmp_path, 150)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed" in done.stdout
    assert not (tmp_path / "supabase" / ".temp").exists()  # the test servers' stores live elsewhere
