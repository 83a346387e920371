"""What hot reload watches, without processes: ignore rules and the watch set."""

from __future__ import annotations

from pathlib import Path

import pytest
from reload_helpers import CONFIG, MakeProject, functions_dir, load

from edgecli.host.watch import is_ignored, watch_set

pytestmark = pytest.mark.timeout(10)


# --- ignore rules and the watch set ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "hello/__pycache__/index.cpython-311.pyc",
        "hello/index.pyc",
        "hello/.index.py.swp",
        "hello/index.py~",
        "hello/.#index.py",
        "hello/#index.py#",
        "hello/4913",
        "hello/index.py.tmp",
        "hello/index.py___jb_tmp___",
        ".git/index",
        "hello/.venv/lib/x.py",
        "hello/venv/lib/x.py",
        "node_modules/x/index.js",
        ".idea/workspace.xml",
        ".vscode/settings.json",
    ],
)
def test_noise_is_ignored(relative: str) -> None:
    assert is_ignored(Path(relative))


@pytest.mark.parametrize(
    "relative", ["hello/index.py", "_shared/db.py", ".env", "hello/.env", "hello/data.json", "hello/tmp/x.py"]
)
def test_sources_and_env_files_are_watched(relative: str) -> None:
    assert not is_ignored(Path(relative))


def test_only_functions_config_and_env_file_are_relevant(project: Path) -> None:
    watch = watch_set(load(project))
    supabase = project.resolve() / "supabase"
    assert watch.is_relevant(supabase / "config.toml")
    assert watch.is_relevant(supabase / "functions" / "hello" / "index.py")
    assert watch.is_relevant(supabase / "functions")  # re-created: the watch must be renewed
    assert not watch.is_relevant(supabase / ".temp" / "edgecli" / "events.db")
    assert not watch.is_relevant(supabase / "seed.sql")
    assert not watch.is_relevant(supabase / "functions" / "hello" / "__pycache__" / "index.cpython-311.pyc")
    assert watch.recursive == (supabase / "functions",)
    assert watch.flat == (supabase,)  # non-recursive: the event store's writes never wake the watcher


def test_a_project_inside_a_venv_folder_is_still_watched(make_project: MakeProject) -> None:
    root = make_project(CONFIG, ["hello"], name="venv")
    watch = watch_set(load(root))
    assert watch.is_relevant(functions_dir(root) / "hello" / "index.py")


def test_an_env_file_outside_the_project_is_watched_alone(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "dev.env").write_text("A=1\n")
    watch = watch_set(load(project, env_file=outside / "dev.env"))
    assert outside.resolve() in watch.flat
    assert watch.is_relevant(outside.resolve() / "dev.env")
    assert not watch.is_relevant(outside.resolve() / "other.txt")


def test_symlinked_function_folders_are_part_of_the_watch(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "linked"
    target.mkdir()
    (target / "index.py").write_text("x = 1\n")
    before = watch_set(load(project))
    (functions_dir(project) / "linked").symlink_to(target, target_is_directory=True)
    after = watch_set(load(project))
    assert after.links == {(functions_dir(project) / "linked", target.resolve())}
    assert before != after  # a new link means a new watch: a running one would not follow it
