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


def _scaffold_and_test(root: Path, functions: list[list[str]]) -> str:
    edgecli = [sys.executable, "-m", "edgecli"]
    for args in (["init"], *(["new", *f] for f in functions)):
        done = _run([*edgecli, *args], root, 60)
        assert done.returncode == 0, done.stderr
    for name, *_ in functions:
        assert list((root / "supabase" / "functions" / name).glob(f"test_{name.replace('-', '_')}*.py"))
    done = _run([sys.executable, "-m", "pytest", "-p", "no:randomly", "supabase/functions"], root, 150)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert not (root / "supabase" / ".temp").exists()  # the test servers' stores live elsewhere
    return done.stdout


@pytest.mark.timeout(180)
def test_init_new_new_then_pytest_passes(tmp_path: Path) -> None:
    out = _scaffold_and_test(tmp_path, [["hello"], ["bg", "--template", "background"]])
    assert "5 passed" in out


@pytest.mark.timeout(180)
def test_every_template_s_tests_pass_together(tmp_path: Path) -> None:
    templates = ["hello", "background", "router", "ts-hello", "ts-background"]
    out = _scaffold_and_test(tmp_path, [[f"my-{t}", "--template", t] for t in templates])
    assert "9 passed" in out


@pytest.mark.timeout(180)
def test_two_names_that_make_the_same_test_name_get_test_files_of_their_own(tmp_path: Path) -> None:
    """my-router and my_router would both have test_my_router.py, which pytest cannot collect together."""
    out = _scaffold_and_test(tmp_path, [["my-router"], ["my_router"]])
    functions = tmp_path / "supabase" / "functions"
    assert (functions / "my-router" / "test_my_router.py").is_file()
    assert (functions / "my_router" / "test_my_router_2.py").is_file()
    assert "4 passed" in out
