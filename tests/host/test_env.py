"""A function's environment: the layer order, what is kept out, env file warnings, and the parse cache."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from edgecli.config import Config, FunctionConfig
from edgecli.host import env as env_module
from edgecli.host.auth import make_key
from edgecli.host.env import build_function_env

SECRET = "env-test-secret-that-is-at-least-32-characters"
pytestmark = pytest.mark.timeout(10)


def _project(
    tmp_path: Path, common: str | None = None, own: str | None = None, **config: Any
) -> tuple[Config, FunctionConfig]:
    functions = tmp_path / "supabase" / "functions"
    (functions / "hello").mkdir(parents=True)
    common_file = own_file = None
    if common is not None:
        common_file = functions / ".env"
        common_file.write_text(common)
    if own is not None:
        own_file = functions / "hello" / ".env"
        own_file.write_text(own)
    function = FunctionConfig(
        name="hello",
        entrypoint=functions / "hello" / "index.py",
        directory=functions / "hello",
        env_file=own_file,
    )
    cfg = Config(project_dir=tmp_path, env_file=common_file, jwt_secret=SECRET, **config)
    return cfg, function


def test_injected_variables(tmp_path: Path) -> None:
    cfg, function = _project(tmp_path, port=60123, db_url="postgresql://u:p@127.0.0.1:6000/db")
    result = build_function_env(cfg, function)
    assert result.env["SUPABASE_URL"] == "http://127.0.0.1:60123"
    assert result.env["SUPABASE_ANON_KEY"] == make_key(SECRET, "anon")
    assert result.env["SUPABASE_SERVICE_ROLE_KEY"] == make_key(SECRET, "service_role")
    assert result.env["SUPABASE_DB_URL"] == "postgresql://u:p@127.0.0.1:6000/db"
    assert result.warnings == ()


def test_host_env_is_not_passed_wholesale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stray = f"EDGECLI_TEST_STRAY_{uuid.uuid4().hex}"
    monkeypatch.setenv(stray, "leaked")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked")
    monkeypatch.setenv("PATH", "/opt/test/bin")
    monkeypatch.setenv("HOME", "/home/tester")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    monkeypatch.setenv("VIRTUAL_ENV", "/venv")
    cfg, function = _project(tmp_path)
    env = build_function_env(cfg, function).env
    assert stray not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PATH"] == "/opt/test/bin"
    assert env["HOME"] == "/home/tester"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PYTHONHASHSEED"] == "7"
    assert env["VIRTUAL_ENV"] == "/venv"
    leaked = set(env) - set(os.environ)
    assert leaked <= {
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_DB_URL",
        "SUPABASE_JWKS",
        "SUPABASE_PUBLISHABLE_KEYS",
        "SUPABASE_SECRET_KEYS",
    }


def test_a_kept_host_environment_is_layered_like_os_environ_and_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/changed/after/start")
    cfg, function = _project(tmp_path, own="PATH=/from/env/file\nEXTRA=1\n")
    kept = MappingProxyType({"PATH": "/at/start", "HOME": "/home/tester"})
    env = build_function_env(cfg, function, kept).env
    assert env["HOME"] == "/home/tester"  # from what serve kept, not from os.environ now
    assert env["PATH"] == "/from/env/file" and env["EXTRA"] == "1"  # env files still win
    assert dict(kept) == {"PATH": "/at/start", "HOME": "/home/tester"}


def test_layers_later_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "host")
    cfg, function = _project(
        tmp_path,
        common="TZ=common\nCOMMON=common\nSHARED=common\nSECRET_A=common\n",
        own="SHARED=own\nOWN=own\n",
        secrets=MappingProxyType({"SECRET_A": "secret", "SECRET_B": "secret", "TZ": "secret"}),
    )
    env = build_function_env(cfg, function).env
    assert env["TZ"] == "common"  # host < secrets < common env file
    assert env["SECRET_A"] == "common"  # secrets < common env file
    assert env["SECRET_B"] == "secret"
    assert env["COMMON"] == "common"
    assert env["SHARED"] == "own"  # common env file < the function's own
    assert env["OWN"] == "own"


def test_secrets_override_host_and_injected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/host/home")
    secrets = {"HOME": "/secret/home", "SUPABASE_DB_URL": "postgresql://secret", "API_KEY": "k"}
    cfg, function = _project(tmp_path, secrets=MappingProxyType(secrets))
    env = build_function_env(cfg, function).env
    assert env["HOME"] == "/secret/home"
    assert env["SUPABASE_DB_URL"] == "postgresql://secret"
    assert env["API_KEY"] == "k"


def test_supabase_names_in_env_files_are_skipped(tmp_path: Path) -> None:
    cfg, function = _project(tmp_path, common="SUPABASE_URL=http://evil\nOK=1\n", own="X=1\nSUPABASE_FOO=2\n")
    result = build_function_env(cfg, function)
    assert result.env["SUPABASE_URL"] == f"http://127.0.0.1:{cfg.port}"
    assert "SUPABASE_FOO" not in result.env
    assert result.env["OK"] == "1"
    common, own = result.warnings
    assert f"{cfg.env_file}:1:" in common and "SUPABASE_URL" in common
    assert f"{function.env_file}:2:" in own and "SUPABASE_FOO" in own


def test_malformed_line_is_a_warning_with_file_and_line(tmp_path: Path) -> None:
    cfg, function = _project(tmp_path, own='A=1\n\n# note\n\nthis is not a binding\nB="two words"\nC\n')
    result = build_function_env(cfg, function)
    assert result.env["A"] == "1"
    assert result.env["B"] == "two words"  # the rest of the file still loads
    assert "C" not in result.env
    bad, bare = result.warnings
    assert bad.startswith(f"{function.env_file}:5: ") and "this is not a binding" in bad
    assert bare.startswith(f"{function.env_file}:7: ") and "'C'" in bare


def test_dotenv_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    monkeypatch.setenv("EDGECLI_TEST_HIDDEN", "host-only")
    cfg, function = _project(
        tmp_path,
        common="BASE=base\n",
        own=(
            "export EXPORTED=yes\n"
            "QUOTED='a # b'\n"
            "INLINE=value # comment\n"
            'MULTI="line1\nline2"\n'
            "REF=${BASE}-${HOME}\n"
            "HIDDEN=${EDGECLI_TEST_HIDDEN}\n"
            "DEFAULTED=${MISSING:-fallback}\n"
        ),
    )
    env = build_function_env(cfg, function).env
    assert env["EXPORTED"] == "yes"
    assert env["QUOTED"] == "a # b"
    assert env["INLINE"] == "value"
    assert env["MULTI"] == "line1\nline2"
    assert env["REF"] == "base-/home/tester"  # resolved against the layers below, not the host env
    assert env["HIDDEN"] == ""
    assert env["DEFAULTED"] == "fallback"


def test_unreadable_env_file_is_a_warning(tmp_path: Path) -> None:
    cfg, function = _project(tmp_path, own="A=1\n")
    assert function.env_file is not None
    function.env_file.write_bytes(b"A=\xff\xfe\n")
    result = build_function_env(cfg, function)
    assert "A" not in result.env
    (warning,) = result.warnings
    assert warning.startswith(f"{function.env_file}: cannot read")
    function.env_file.unlink()
    (warning,) = build_function_env(cfg, function).warnings
    assert "not found" in warning


def test_cache_reparses_only_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, function = _project(tmp_path, own="A=1\n")
    assert function.env_file is not None
    calls: list[Path] = []
    real_parse = env_module.parse_env_file

    def counting_parse(path: Path) -> env_module._ParsedFile:
        calls.append(path)
        return real_parse(path)

    monkeypatch.setattr(env_module, "parse_env_file", counting_parse)
    assert build_function_env(cfg, function).env["A"] == "1"
    assert build_function_env(cfg, function).env["A"] == "1"
    assert calls == [function.env_file]

    # Same size, newer mtime: reparsed. Then a different size with the mtime unchanged: reparsed too.
    stat = function.env_file.stat()
    function.env_file.write_text("A=2\n")
    os.utime(function.env_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert build_function_env(cfg, function).env["A"] == "2"
    function.env_file.write_text("A=333\n")
    os.utime(function.env_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert build_function_env(cfg, function).env["A"] == "333"
    assert len(calls) == 3


def test_results_do_not_share_state(tmp_path: Path) -> None:
    cfg, function = _project(tmp_path, own="A=1\n")
    first = build_function_env(cfg, function)
    first.env["A"] = "changed"
    assert build_function_env(cfg, function).env["A"] == "1"
