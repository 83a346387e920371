"""The real `edgecli` command, run in a subprocess: --version, --help, init, new, and error reporting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import edgecli

pytestmark = pytest.mark.timeout(60)
MakeProject = Callable[..., Path]
EDGECLI = Path(sys.executable).parent / "edgecli"  # the console script installed with the package


def run(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    assert EDGECLI.is_file(), f"the edgecli console script is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECLI_")}
    env["COLUMNS"] = "200"  # help text on one line per entry, whatever the terminal the tests run in
    return subprocess.run(
        [str(EDGECLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def assert_clean_failure(result: subprocess.CompletedProcess[str], status: int) -> None:
    """Failed with `status`, said why on stderr in our words, and showed no traceback."""
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout


# --- version and help -----------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"edgecli {edgecli.__version__}"


def test_python_dash_m_runs_the_same_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgecli", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.strip() == f"edgecli {edgecli.__version__}"


def test_help_lists_commands_and_keeps_toml_section_names(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("init", "new", "serve", "invoke", "logs", "tasks"):
        assert f" {command} " in result.stdout
    # Rich would swallow these as markup if they were not escaped.
    assert "[edge_runtime]" in result.stdout and "[functions.NAME]" in result.stdout
    assert run("-h", cwd=tmp_path).stdout == result.stdout
    assert "[api] port" in run("serve", "--help", cwd=tmp_path).stdout
    new_help = run("new", "--help", cwd=tmp_path).stdout
    assert "[functions.NAME]" in new_help and "--template" in new_help and "--list" in new_help


# --- init -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["serve", "--port", "abc"], ["invoke", "hello", "--port", "x"], ["logs", "-n", "z"]]
)
def test_a_bad_option_value_names_the_option_and_no_env_var(tmp_path: Path, args: list[str]) -> None:
    """No option reads an env var; Click 8.2 would still say "(env var: 'None')" in the message."""
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '" in result.stderr and "is not a valid integer" in result.stderr
    assert "env var" not in result.stderr and "Traceback" not in result.stderr


def test_init_then_refuse_then_force(tmp_path: Path) -> None:
    result = run("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "supabase" / "config.toml"
    assert config.is_file() and (tmp_path / "supabase" / "functions").is_dir()
    assert (tmp_path / "supabase" / ".gitignore").is_file()
    assert "supabase/config.toml" in result.stdout

    config.write_text(config.read_text() + "# my edit\n")
    before = snapshot(tmp_path)
    refused = run("init", cwd=tmp_path)
    assert_clean_failure(refused, 1)
    assert "--force" in refused.stderr and snapshot(tmp_path) == before

    assert run("init", "--force", cwd=tmp_path).returncode == 0
    assert "# my edit" not in config.read_text()


def test_init_with_workdir_before_or_after_the_command(tmp_path: Path) -> None:
    assert run("--workdir", "one", "init", cwd=tmp_path).returncode == 0
    assert run("init", "--workdir", "two", cwd=tmp_path).returncode == 0
    assert (tmp_path / "one" / "supabase" / "config.toml").is_file()
    assert (tmp_path / "two" / "supabase" / "config.toml").is_file()


# --- new ------------------------------------------------------------------------------------------------


def test_new_each_template_prints_the_path_and_next_commands(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    root = make_project(stock_supabase_config)
    expected_invoke = {
        "hello": 'edgecli invoke greet --data \'{"name": "Functions"}\'',
        "background": "edgecli invoke jobs --data '{\"steps\": 3}' --wait",
        "router": "edgecli invoke api -X GET --path /items",
    }
    for template, name in (("hello", "greet"), ("background", "jobs"), ("router", "api")):
        result = run("new", name, "--template", template, cwd=root)
        assert result.returncode == 0, result.stderr
        assert f"supabase/functions/{name}/index.py" in result.stdout
        lines = [line.strip() for line in result.stdout.splitlines()]
        assert "edgecli serve" in lines and expected_invoke[template] in lines
    text = (root / "supabase" / "config.toml").read_text()
    assert text.startswith(stock_supabase_config)  # every comment and key kept, byte for byte
    for name in ("greet", "jobs", "api"):
        block = f'enabled = true\nverify_jwt = true\nentrypoint = "./functions/{name}/index.py"\n'
        assert f"[functions.{name}]\n{block}" in text


def test_new_from_a_subdirectory_and_with_workdir(make_project: MakeProject, tmp_path: Path) -> None:
    root = make_project()
    inside = root / "supabase" / "functions"
    assert run("new", "a", cwd=inside).returncode == 0
    elsewhere = run("new", "b", "--workdir", str(root), cwd=tmp_path)
    assert elsewhere.returncode == 0
    assert "edgecli serve --workdir project" in elsewhere.stdout
    assert (inside / "a" / "index.py").is_file() and (inside / "b" / "index.py").is_file()


@pytest.mark.parametrize("name", ["../x", "1a", "a/b", ""])
def test_new_bad_name_is_exit_2_and_writes_nothing(make_project: MakeProject, name: str) -> None:
    root = make_project()
    before = snapshot(root.parent)
    result = run("new", name, cwd=root)
    assert_clean_failure(result, 2)
    assert "not a valid function name" in result.stderr
    assert snapshot(root.parent) == before


def test_new_existing_function_is_exit_1(make_project: MakeProject) -> None:
    root = make_project("", ["hello"])
    before = snapshot(root)
    result = run("new", "hello", cwd=root)
    assert_clean_failure(result, 1)
    assert "already exists" in result.stderr and snapshot(root) == before


def test_new_existing_block_is_left_alone_with_a_note(make_project: MakeProject) -> None:
    config = "# top\n[functions.hello]\nverify_jwt = false # keep\n"
    root = make_project(config)
    result = run("new", "hello", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "already has [functions.hello]" in result.stdout
    assert (root / "supabase" / "config.toml").read_text() == config


def test_new_list_shows_the_templates(tmp_path: Path) -> None:
    result = run("new", "--list", cwd=tmp_path)  # needs no project
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert {"hello", "background", "router"} <= set(names)


def test_new_without_a_name_or_with_an_unknown_template_is_exit_2(make_project: MakeProject) -> None:
    root = make_project()
    assert_clean_failure(run("new", cwd=root), 2)
    unknown = run("new", "x", "--template", "nope", cwd=root)
    assert_clean_failure(unknown, 2)
    assert "background, hello, router" in unknown.stderr


# --- errors ---------------------------------------------------------------------------------------------


def test_outside_a_project_says_how_to_fix(tmp_path: Path) -> None:
    result = run("new", "x", cwd=tmp_path)
    assert_clean_failure(result, 1)
    assert "supabase/config.toml" in result.stderr and "edgecli init" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "fast"\n',
            'supabase/config.toml:5: [edge_runtime] policy is "fast"',
        ),
        ("[edge_runtime]\nmemory_limit_mb = -1\n", "supabase/config.toml:2: [edge_runtime] memory_limit_mb"),
        ("[edge_runtime\n", "supabase/config.toml:1: not valid TOML"),
    ],
)
def test_serve_with_bad_config_is_exit_2_with_file_line_and_key(
    make_project: MakeProject, config: str, expected: str
) -> None:
    root = make_project(config, ["hello"])
    result = run("serve", "--port", "1", cwd=root)  # fails in the config, long before binding a port
    assert_clean_failure(result, 2)
    assert expected in result.stderr
