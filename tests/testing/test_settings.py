"""ServeSettings: what a test server is started with, checked before any process starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dotenv import dotenv_values

from edgecli.testing import EdgeServer
from edgecli.testing.settings import ServeSettings, SettingsError

MakeProject = Callable[..., Path]
pytestmark = pytest.mark.timeout(10)


def test_equal_settings_are_one_key_and_the_project_is_found_from_below(make_project: MakeProject) -> None:
    root = make_project()
    inner = root / "supabase" / "functions"
    a = ServeSettings.make(root, "oneshot", None, {"B": "2", "A": "1"})
    b = ServeSettings.make(inner, "oneshot", None, {"A": "1", "B": "2"})
    assert a == b and hash(a) == hash(b) and a.workdir == root.resolve()
    assert ServeSettings.make(root) != a


def test_command_line_and_environment(make_project: MakeProject, tmp_path: Path, monkeypatch) -> None:
    root = make_project()
    monkeypatch.setenv("EDGECLI_PORT", "1")
    monkeypatch.setenv("EDGECLI_NO_VERIFY_JWT", "1")
    settings = ServeSettings.make(root, "per_request", True, functions=["hello"])
    args = settings.serve_args(4321, tmp_path)
    assert args[:2] == ["serve", "hello"] and "--no-reload" in args and "--json" in args
    assert args[args.index("--policy") + 1] == "per_request" and "--no-verify-jwt" not in args
    env = settings.serve_env(tmp_path)
    assert env["EDGECLI_STATE_DIR"] == str(tmp_path)
    assert "EDGECLI_PORT" not in env and "EDGECLI_NO_VERIFY_JWT" not in env
    assert "--no-verify-jwt" in ServeSettings.make(root, verify_jwt=False).serve_args(1, tmp_path)


def test_env_goes_on_top_of_the_common_env_file(make_project: MakeProject, tmp_path: Path) -> None:
    root = make_project()
    (root / "supabase" / "functions" / ".env").write_text("KEPT=yes\nGREETING=old\n")
    value = 'say "hi"\\there\nnext line'
    args = ServeSettings.make(root, env={"GREETING": value}).serve_args(1, tmp_path)
    written = Path(args[args.index("--env-file") + 1])
    assert dotenv_values(written) == {"KEPT": "yes", "GREETING": value}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "fast"}, "not a worker policy"),
        ({"verify_jwt": "yes"}, "verify_jwt='yes'"),
        ({"env": {"A": 1}}, "must be non-empty strings"),
        ({"functions": ["1bad"]}, "not a function name"),
    ],
)
def test_bad_settings_say_what_to_use(make_project: MakeProject, kwargs: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServeSettings.make(make_project(), **kwargs)


def test_no_project_and_a_bad_config_are_errors_before_any_process(
    make_project: MakeProject, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="edge_workdir"):
        EdgeServer(tmp_path / "nowhere")
    root = make_project('[edge_runtime]\npolicy = "fast"\n')
    with pytest.raises(SettingsError, match=r"config.toml:2.*policy"):
        EdgeServer(root)
