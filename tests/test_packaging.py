"""What gets installed: a wheel built from the repo ships the templates, and `import edgecli` stays light."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_wheel_contains_the_templates_and_the_console_script(tmp_path: Path) -> None:
    # Build from a copy of what a wheel is made of, so the shared work tree gets no build/ or egg-info.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edgecli", "templates"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "absent from the `packages` configuration" not in result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("edgecli-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    expected = {"edgecli/templates/config.toml", "edgecli/templates/gitignore", "edgecli/py.typed"}
    expected |= {
        f"edgecli/templates/functions/{folder.name}/{entry.name}"
        for folder in (REPO / "templates" / "functions").iterdir()
        if folder.is_dir() and folder.name != "__pycache__"
        for entry in folder.iterdir()
        if entry.name in ("index.py", "index.ts")
    }
    expected |= {"edgecli/runtime/deno/worker.ts", "edgecli/runtime/deno/ipc.ts"}
    assert len(expected) >= 10 and expected <= names
    assert "edgecli = edgecli.cli:main" in entry_points
    assert "[pytest11]\nedgecli = edgecli.testing.plugin" in entry_points
    assert not any(n.startswith(("tests/", "supabase/")) for n in names)


def _heavy_modules_after(imports: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after running `imports`."""
    code = f"import sys\n{imports}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=25, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return list(ast.literal_eval(result.stdout.strip()))


@pytest.mark.timeout(30)
def test_import_edgecli_is_light_and_exposes_the_function_api() -> None:
    # Workers import edgecli (and everything under edgecli.runtime) for every function: no CLI stack.
    # Except the worker's side of lent connections, which runs uvicorn's HTTP protocol (and uvicorn
    # imports click): the fork server preloads it for per_worker, and no other worker needs it.
    imports = (
        "import importlib, pkgutil\n"
        "import edgecli, edgecli.runtime\n"
        "assert callable(edgecli.serve) and hasattr(edgecli.EdgeRuntime, 'wait_until')\n"
        "for mod in pkgutil.walk_packages(edgecli.runtime.__path__, 'edgecli.runtime.'):\n"
        "    if mod.name != 'edgecli.runtime.lent':\n"
        "        importlib.import_module(mod.name)"
    )
    assert _heavy_modules_after(imports, ("typer", "rich", "click", "edgecli.cli", "edgecli.console")) == []


@pytest.mark.timeout(30)
def test_the_event_store_process_imports_no_event_loop_and_no_web_stack() -> None:
    # It starts with every `edgecli serve`: the package must not drag asyncio or Starlette into it.
    heavy = ("asyncio", "starlette", "uvloop", "typer", "rich")
    assert _heavy_modules_after("import edgecli.store.writer", heavy) == []


@pytest.mark.timeout(30)
def test_edgecli_testing_imports_no_cli_and_no_pytest() -> None:
    # EdgeServer works from a plain script; only the plugin module, which pytest loads, imports pytest.
    heavy = ("typer", "click", "pytest", "edgecli.cli", "edgecli.console", "edgecli.project")
    assert _heavy_modules_after("from edgecli.testing import EdgeServer, TaskResult", heavy) == []


@pytest.mark.timeout(30)
def test_the_pytest_plugin_is_registered_and_loads_nothing_until_a_test_asks_for_edge() -> None:
    imports = (
        "from importlib.metadata import entry_points\n"
        "(plugin,) = [e for e in entry_points(group='pytest11') if e.name == 'edgecli']\n"
        "assert plugin.value == 'edgecli.testing.plugin', plugin.value\n"
        "plugin.load()"
    )
    assert _heavy_modules_after(imports, ("httpx", "psutil", "edgecli.testing.server", "edgecli.cli")) == []
