"""Hot reload without processes: ignore rules, what is watched, change → functions, config diffs, the
reload line, and forgetting stale bytecode."""

from __future__ import annotations

import importlib.util
import py_compile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from watchfiles import Change

from edgecli.config import Config, Overrides, load_config
from edgecli.host.reloader import (
    ReloadPlan,
    affected_by_files,
    describe,
    forget_bytecode,
    is_ignored,
    lasting,
    plan_reload,
    shown_changes,
    watch_set,
)

pytestmark = pytest.mark.timeout(10)

CONFIG = '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "per_worker"\n'

MakeProject = Callable[..., Path]  # the `make_project` fixture of tests/conftest.py


def load(root: Path, **overrides: Any) -> Config:
    return load_config(root, Overrides(**overrides), environ={})


@pytest.fixture
def project(make_project: MakeProject) -> Path:
    return make_project(CONFIG, ["hello", "other"])


def functions_dir(root: Path) -> Path:
    return root.resolve() / "supabase" / "functions"


def set_config(root: Path, text: str) -> None:
    (root / "supabase" / "config.toml").write_text(text, encoding="utf-8")


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


# --- which functions a change touches -------------------------------------------------------------------


def test_a_file_in_a_function_folder_touches_that_function(project: Path) -> None:
    config = load(project)
    fdir = functions_dir(project)
    paths = [fdir / "hello" / "index.py", fdir / "hello" / "lib" / "util.py", fdir / "hello" / ".env"]
    assert affected_by_files(config, paths) == ({"hello"}, False)


@pytest.mark.parametrize("relative", ["_shared/db.py", ".env", "_utils/x.py", "helpers.py"])
def test_shared_code_and_the_common_env_touch_every_function(project: Path, relative: str) -> None:
    assert affected_by_files(load(project), [functions_dir(project) / relative]) == (set(), True)


def test_config_and_folders_that_are_not_functions_touch_nothing_by_themselves(project: Path) -> None:
    config = load(project)
    paths = [project.resolve() / "supabase" / "config.toml", functions_dir(project) / "draft" / "notes.md"]
    assert affected_by_files(config, paths) == (set(), False)


def test_the_env_file_given_on_the_command_line_touches_every_function(project: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    env_file.write_text("A=1\n")
    config = load(project, env_file=env_file)
    assert affected_by_files(config, [env_file.resolve()]) == (set(), True)


# --- config diffs ---------------------------------------------------------------------------------------


def test_a_function_block_change_reloads_only_that_function(project: Path) -> None:
    old = load(project)
    set_config(project, CONFIG + "\n[functions.hello]\nverify_jwt = false\n")
    plan = plan_reload(old, load(project), [project.resolve() / "supabase" / "config.toml"])
    assert (plan.reloaded, plan.added, plan.removed, plan.restart) == (("hello",), (), (), ())
    assert plan.config.functions["hello"].verify_jwt is False


@pytest.mark.parametrize(
    "edge",
    [
        "wall_clock_limit_sec = 30\n",
        "graceful_exit_timeout_sec = 1\n",
        '[edge_runtime.secrets]\nTOKEN = "abc"\n',
    ],
)
def test_edge_runtime_changes_reload_every_function(project: Path, edge: str) -> None:
    old = load(project)
    set_config(project, CONFIG + edge)
    plan = plan_reload(old, load(project), [project.resolve() / "supabase" / "config.toml"])
    assert sorted(plan.reloaded) == ["hello", "other"]
    assert not plan.new_pools


def test_a_policy_change_gives_every_function_a_new_pool(project: Path) -> None:
    old = load(project)
    set_config(project, CONFIG.replace("per_worker", "oneshot"))
    plan = plan_reload(old, load(project), [project.resolve() / "supabase" / "config.toml"])
    assert sorted(plan.reloaded) == ["hello", "other"]
    assert plan.new_pools and plan.config.policy == "oneshot"


def test_a_policy_given_on_the_command_line_still_wins(project: Path) -> None:
    old = load(project, policy="per_request")
    set_config(project, CONFIG.replace("per_worker", "oneshot"))
    plan = plan_reload(old, load(project, policy="per_request"), [])
    assert plan.empty and plan.config.policy == "per_request"


def test_port_and_jwt_secret_changes_ask_for_a_restart_and_keep_the_old_values(project: Path) -> None:
    old = load(project)
    set_config(
        project,
        CONFIG.replace("54321", "54400")
        + '\n[auth]\njwt_secret = "another-secret-of-32-characters-at-least"\n',
    )
    plan = plan_reload(old, load(project), [project.resolve() / "supabase" / "config.toml"])
    assert len(plan.restart) == 2
    assert "[api] port changed from 54321 to 54400; restart serve to apply" in plan.restart[0]
    assert "[auth] jwt_secret changed; restart serve" in plan.restart[1]
    assert "another-secret" not in plan.restart[1]
    assert (plan.config.port, plan.config.jwt_secret) == (old.port, old.jwt_secret)
    assert plan.empty  # the kept values change nothing the functions see


def test_new_deleted_and_disabled_functions(project: Path, hello_source: str) -> None:
    old = load(project)
    fdir = functions_dir(project)
    (fdir / "fresh").mkdir()
    (fdir / "fresh" / "index.py").write_text(hello_source)
    (fdir / "other" / "index.py").unlink()
    set_config(project, CONFIG + "\n[functions.hello]\nenabled = false\n")
    plan = plan_reload(old, load(project), [fdir / "fresh" / "index.py", fdir / "other" / "index.py"])
    assert (plan.added, sorted(plan.removed), plan.reloaded) == (("fresh",), ["hello", "other"], ())


def test_a_new_function_env_file_reloads_its_function(project: Path) -> None:
    old = load(project)
    (functions_dir(project) / "other" / ".env").write_text("A=1\n")
    assert plan_reload(old, load(project), []).reloaded == ("other",)  # env_file appeared in its config


def test_creating_the_common_env_file_reloads_every_function(project: Path) -> None:
    old = load(project)
    (functions_dir(project) / ".env").write_text("A=1\n")
    assert sorted(plan_reload(old, load(project), []).reloaded) == ["hello", "other"]


# --- the batch, the reload line, bytecode ---------------------------------------------------------------


def test_files_that_came_and_went_within_a_batch_are_dropped(tmp_path: Path) -> None:
    kept = tmp_path / "index.py"
    kept.write_text("x = 1\n")
    changes = {
        kept: {Change.added},
        tmp_path / "sed4Xy": {Change.added, Change.deleted},
        tmp_path / "gone.py": {Change.deleted},
    }
    assert lasting(changes) == {kept, tmp_path / "gone.py"}


def test_the_reload_line_names_functions_outcome_and_files() -> None:
    plan = ReloadPlan(config=Config(project_dir=Path(".")), reloaded=("a", "b"), added=("c",), removed=("d",))
    changes = [f"supabase/functions/_shared/m{i}.py" for i in range(5)]
    line = describe(plan, changes, 42.4, failed=["b"], slow=[])
    assert line.startswith("reloaded 2 functions (a, b); added c; removed d: new code ready in 42 ms; ")
    assert "b failed to boot (503 BOOT_ERROR until the next change)" in line
    assert line.endswith(
        "(changed: supabase/functions/_shared/m0.py, supabase/functions/_shared/m1.py, "
        "supabase/functions/_shared/m2.py and 2 more)"
    )


def test_a_reload_whose_only_function_failed_does_not_claim_new_code_is_ready() -> None:
    plan = ReloadPlan(config=Config(project_dir=Path(".")), reloaded=("a",))
    line = describe(plan, ["supabase/functions/a/index.py"], 30, failed=["a"], slow=[])
    assert line == (
        "reloaded a: a failed to boot (503 BOOT_ERROR until the next change) "
        "(changed: supabase/functions/a/index.py)"
    )


def test_changed_modules_lose_their_cached_bytecode(tmp_path: Path) -> None:
    source = tmp_path / "index.py"
    source.write_text("x = 1\n")
    cached = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(cached))
    untouched = tmp_path / "other.py"
    untouched.write_text("y = 1\n")
    other_cached = Path(importlib.util.cache_from_source(str(untouched)))
    py_compile.compile(str(untouched), cfile=str(other_cached))
    forget_bytecode([source, tmp_path / "gone.py", tmp_path / "data.json"])
    assert not cached.exists() and other_cached.exists()


def test_changes_are_shown_relative_without_folders_whose_files_are_listed(tmp_path: Path) -> None:
    shared = tmp_path / "supabase" / "functions" / "_shared"
    paths = [shared, shared / "m.py", tmp_path / "supabase" / "functions" / "gone"]
    assert shown_changes(paths, tmp_path) == ["supabase/functions/_shared/m.py", "supabase/functions/gone"]
