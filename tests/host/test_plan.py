"""Hot reload planning without processes: change → functions, config diffs, the reload line, and
forgetting stale bytecode."""

from __future__ import annotations

import importlib.util
import py_compile
from pathlib import Path

import pytest
from reload_helpers import CONFIG, functions_dir, load, set_config
from watchfiles import Change

from edgecli.config import Config
from edgecli.host.plan import (
    ReloadPlan,
    affected_by_files,
    describe,
    forget_bytecode,
    lasting,
    plan_reload,
    shown_changes,
)

pytestmark = pytest.mark.timeout(10)


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
