"""Config loading: defaults, the stock Supabase file, precedence, validation errors, function discovery."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

from edgecli.config import (
    DEFAULT_EVENT_RETENTION,
    DEFAULT_JWT_SECRET,
    LIMIT_KEYS,
    Config,
    Limits,
    Overrides,
    load_config,
)
from edgecli.config.source import LIMIT_SPECS
from edgecli.errors import ConfigError, ProjectNotFoundError, UsageError

MakeProject = Callable[..., Path]

pytestmark = pytest.mark.timeout(10)


def load(root: Path, overrides: Overrides | None = None, /, **environ: str) -> Config:
    """load_config with an explicit environment, so the host's EDGECLI_* never leak in."""
    return load_config(root, overrides, environ=environ)


def error_for(make_project: MakeProject, config: str, **environ: str) -> str:
    root = make_project(config, ["hello"])
    with pytest.raises(ConfigError) as info:
        load(root, **environ)
    assert info.value.exit_code == 2
    return str(info.value)


# --- defaults and the stock Supabase config -----------------------------------------------------------


def test_defaults_from_a_minimal_config(make_project: MakeProject) -> None:
    root = make_project("", ["hello"])
    config = load(root)
    assert config.project_dir == root.resolve()
    assert (config.policy, config.host, config.port) == ("per_worker", "127.0.0.1", 54321)
    assert config.verify_jwt and config.reload
    assert config.jwt_secret == DEFAULT_JWT_SECRET
    assert config.db_url == "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
    assert config.limits == Limits()
    assert config.event_retention == DEFAULT_EVENT_RETENTION
    assert config.env_file is None and dict(config.secrets) == {}
    assert list(config.functions) == ["hello"]
    assert config.warnings == () and config.skipped == ()


def test_stock_supabase_config_loads_without_error_or_warning(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    config = load(make_project(stock_supabase_config, ["hello"]))
    assert config.warnings == ()
    assert config.port == 54321 and config.policy == "per_worker"
    assert config.db_url.endswith("@127.0.0.1:54322/postgres")
    assert config.limits == Limits()
    assert list(config.functions) == ["hello"]


def test_unknown_edge_runtime_key_is_one_warning_with_its_line(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    text = stock_supabase_config.replace("deno_version = 2", "deno_version = 2\nturbo = true")
    line = text.splitlines().index("turbo = true") + 1
    config = load(make_project(text))
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith(f"supabase/config.toml:{line}: [edge_runtime] turbo ")
    assert "policy" in config.warnings[0]  # says what is known


def test_unknown_keys_outside_edge_runtime_are_ignored(make_project: MakeProject) -> None:
    config = load(make_project('[studio]\nwhatever = 1\n[api]\nport = 54321\nnew_thing = "x"\n'))
    assert config.warnings == ()


def test_every_limit_key_has_a_range() -> None:
    assert set(LIMIT_SPECS) == set(LIMIT_KEYS)


def test_config_is_frozen_and_mappings_are_read_only(make_project: MakeProject) -> None:
    config = load(make_project("[edge_runtime.secrets]\na = 'b'\n", ["hello"]))
    assert isinstance(config.functions, MappingProxyType) and isinstance(config.secrets, MappingProxyType)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.secrets["x"] = "y"  # type: ignore[index]


# --- values from the file ------------------------------------------------------------------------------


def test_file_values(make_project: MakeProject) -> None:
    root = make_project(
        "[api]\nport = 60000\n[db]\nport = 6000\n"
        "[auth]\njwt_secret = 'a-secret-of-at-least-32-characters!!'\n"
        "[edge_runtime]\npolicy = 'oneshot'\nmemory_limit_mb = 128\nwall_clock_limit_sec = 5\n"
        "cpu_time_soft_limit_ms = 0\nevent_retention = 500\nevent_retention_mb = 20\n"
        "request_head_timeout_sec = 2.5\n"
    )
    config = load(root)
    assert (config.port, config.policy, config.event_retention) == (60000, "oneshot", 500)
    assert config.event_retention_mb == 20
    assert config.head_timeout_sec == 2.5
    assert config.warnings == ()
    assert config.db_url == "postgresql://postgres:postgres@127.0.0.1:6000/postgres"
    assert config.jwt_secret == "a-secret-of-at-least-32-characters!!"
    assert config.limits == Limits(memory_limit_mb=128, wall_clock_limit_sec=5.0, cpu_time_soft_limit_ms=0)


def test_secrets_literal_and_from_the_environment(make_project: MakeProject) -> None:
    root = make_project("[edge_runtime.secrets]\nplain = 'p'\napi_key = 'env(MY_KEY)'\n")
    assert dict(load(root, MY_KEY="k-123").secrets) == {"plain": "p", "api_key": "k-123"}


def test_jwt_secret_may_come_from_the_environment(make_project: MakeProject) -> None:
    root = make_project("[auth]\njwt_secret = 'env(JWT)'\n")
    assert load(root, JWT="from-env").jwt_secret == "from-env"


def test_supabase_prefixed_secret_is_dropped_with_a_warning(make_project: MakeProject) -> None:
    config = load(make_project("[edge_runtime.secrets]\nSUPABASE_URL = 'x'\nok = 'y'\n"))
    assert dict(config.secrets) == {"ok": "y"}
    assert len(config.warnings) == 1 and "supabase/config.toml:2: secret SUPABASE_URL" in config.warnings[0]


# --- precedence: defaults < file < environment < flags ------------------------------------------------


def test_port_precedence(make_project: MakeProject) -> None:
    root = make_project("[api]\nport = 50001\n")
    assert load(root).port == 50001
    assert load(root, EDGECLI_PORT="50002").port == 50002
    assert load(root, Overrides(port=50003), EDGECLI_PORT="50002").port == 50003
    assert load(root, Overrides(port=0)).port == 0  # any free port: serve binds it and says which


def test_policy_precedence(make_project: MakeProject) -> None:
    root = make_project("[edge_runtime]\npolicy = 'oneshot'\n")
    assert load(root).policy == "oneshot"
    assert load(root, EDGECLI_POLICY="per_request").policy == "per_request"
    assert load(root, Overrides(policy="per_worker"), EDGECLI_POLICY="per_request").policy == "per_worker"


def test_host_verify_jwt_reload_and_json_precedence(make_project: MakeProject) -> None:
    root = make_project("[functions.hello]\nverify_jwt = true\n", ["hello"])
    assert load(root, EDGECLI_HOST="0.0.0.0").host == "0.0.0.0"
    assert load(root, Overrides(host="::1"), EDGECLI_HOST="0.0.0.0").host == "::1"
    for config in (load(root, EDGECLI_NO_VERIFY_JWT="1"), load(root, Overrides(no_verify_jwt=True))):
        assert not config.verify_jwt and not config.functions["hello"].verify_jwt
    assert load(root, EDGECLI_NO_VERIFY_JWT="false").verify_jwt
    config = load(root, Overrides(reload=False, json_output=True))
    assert not config.reload and config.json_output


def test_prod_follows_the_container_contract(make_project: MakeProject) -> None:
    root = make_project("[api]\nport = 50001\n")
    dev = load(root)
    assert (dev.prod, dev.store, dev.reload, dev.host) == (False, True, True, "127.0.0.1")
    prod = load(root, Overrides(prod=True))
    assert (prod.prod, prod.store, prod.reload, prod.json_output) == (True, False, False, True)
    assert (prod.host, prod.port) == ("0.0.0.0", 50001)  # no $PORT: --port, else the file, as in dev
    assert load(root, Overrides(prod=True, port=50003), PORT="8080").port == 8080  # the platform's $PORT wins
    assert load(root, Overrides(prod=True), PORT="8080").port == 8080
    assert load(root, PORT="8080").port == 50001  # $PORT means nothing to dev serve
    assert load(root, Overrides(prod=True, store=True, host="127.0.0.1")).store
    assert load(root, Overrides(prod=True, host="127.0.0.1")).host == "127.0.0.1"
    assert not load(root, Overrides(store=False)).store


def test_prod_refuses_a_port_variable_that_is_not_a_port(make_project: MakeProject) -> None:
    root = make_project()
    with pytest.raises(UsageError, match=r"environment variable PORT='http' is not a port"):
        load(root, Overrides(prod=True), PORT="http")


def test_env_file_precedence(make_project: MakeProject, tmp_path: Path) -> None:
    root = make_project()
    assert load(root).env_file is None
    common = root / "supabase" / "functions" / ".env"
    common.write_text("A=1\n")
    assert load(root).env_file == common.resolve()
    from_env, from_flag = tmp_path / "env.a", tmp_path / "env.b"
    from_env.write_text("")
    from_flag.write_text("")
    assert load(root, EDGECLI_ENV_FILE=str(from_env)).env_file == from_env.resolve()
    assert load(root, Overrides(env_file=from_flag), EDGECLI_ENV_FILE=str(from_env)).env_file == from_flag


def test_state_dir_moves_the_event_store_out_of_the_project(
    make_project: MakeProject, tmp_path: Path
) -> None:
    root = make_project()
    assert load(root).events_db == root.resolve() / "supabase" / ".temp" / "edgecli" / "events.db"
    elsewhere = tmp_path / "state"
    assert load(root, EDGECLI_STATE_DIR=str(elsewhere)).events_db == elsewhere / "events.db"


def test_per_function_overrides_and_env_file(make_project: MakeProject) -> None:
    root = make_project(
        "[edge_runtime]\nmemory_limit_mb = 100\n[functions.big]\nmemory_limit_mb = 1024\nverify_jwt = false\n"
        "import_map = './import_map.json'\nstatic = ['./x']\n",
        ["big", "small"],
    )
    (root / "supabase" / "functions" / "big" / ".env").write_text("X=1\n")
    config = load(root)
    big, small = config.functions["big"], config.functions["small"]
    assert (big.limits.memory_limit_mb, small.limits.memory_limit_mb) == (1024, 100)
    assert big.limits.cpu_time_hard_limit_ms == 2000  # the rest is inherited
    assert (big.verify_jwt, small.verify_jwt) == (False, True)
    assert big.env_file == big.directory / ".env" and small.env_file is None
    assert big.entrypoint == root.resolve() / "supabase" / "functions" / "big" / "index.py"
    assert config.warnings == ()  # Supabase's own function keys are accepted silently


# --- errors: file, line, key, what is allowed; exit status 2 -------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "allowed"),
    [
        (
            '[edge_runtime]\npolicy = "fast"\n',
            2,
            "[edge_runtime] policy",
            '"per_worker", "oneshot", "per_request"',
        ),
        ("[edge_runtime]\npolicy = 1\n", 2, "[edge_runtime] policy", '"per_worker"'),
        ('\n[edge_runtime]\nmemory_limit_mb = "256"\n', 3, "[edge_runtime] memory_limit_mb", "whole number"),
        ("[edge_runtime]\nmemory_limit_mb = -1\n", 2, "[edge_runtime] memory_limit_mb", "from 0 to"),
        ("[edge_runtime]\nmax_parallelism = 100000\n", 2, "[edge_runtime] max_parallelism", "from 0 to 1024"),
        ("[edge_runtime]\nmax_parallelism = 2.5\n", 2, "[edge_runtime] max_parallelism", "whole number"),
        ("[edge_runtime]\nwall_clock_limit_sec = nan\n", 2, "[edge_runtime] wall_clock_limit_sec", "number"),
        (
            "[edge_runtime]\ncpu_time_hard_limit_ms = true\n",
            2,
            "[edge_runtime] cpu_time_hard_limit_ms",
            "number",
        ),
        ("[edge_runtime]\nevent_retention = 0\n", 2, "[edge_runtime] event_retention", "from 1 to"),
        ("[edge_runtime]\nevent_retention_mb = 0\n", 2, "[edge_runtime] event_retention_mb", "from 1 to"),
        ("[edge_runtime]\nrequest_head_timeout_sec = -1\n", 2, "request_head_timeout_sec", "from 0 to"),
        ('[edge_runtime]\nenabled = "yes"\n', 2, "[edge_runtime] enabled", "true or false"),
        ("[edge_runtime]\ncpu_time_soft_limit_ms = 3000\n", 2, "cpu_time_soft_limit_ms", "hard limit"),
        ("[api]\nport = 70000\n", 2, "[api] port", "from 1 to 65535"),
        ("[db]\nport = 'x'\n", 2, "[db] port", "from 1 to 65535"),
        ("[auth]\njwt_secret = 42\n", 2, "[auth] jwt_secret", "non-empty string"),
        ("edge_runtime = 3\n", 1, "edge_runtime", "table"),
        ("[edge_runtime.secrets]\nkey = 1\n", 2, "[edge_runtime.secrets] key", "strings"),
        (
            "[edge_runtime.secrets]\nkey = 'env(NOT_SET_ANYWHERE)'\n",
            2,
            "[edge_runtime.secrets] key",
            "NOT_SET",
        ),
        ("[functions.hello]\nverify_jwt = 'no'\n", 2, "[functions.hello] verify_jwt", "true or false"),
        ("[functions.hello]\nenabled = 1\n", 2, "[functions.hello] enabled", "true or false"),
        ("[functions.hello]\nmemory_limit_mb = -5\n", 2, "[functions.hello] memory_limit_mb", "from 0 to"),
        ("[functions.hello]\ncpu_time_soft_limit_ms = 2500\n", 2, "[functions.hello] cpu_time_soft", "hard"),
        (
            "[functions.hello]\nentrypoint = '../../x.py'\n",
            2,
            "[functions.hello] entrypoint",
            "inside supabase/",
        ),
        ("[functions.hello]\nentrypoint = 3\n", 2, "[functions.hello] entrypoint", "relative to supabase/"),
        ('[functions."1bad"]\nenabled = true\n', 1, "[functions.1bad]", "^[A-Za-z][A-Za-z0-9_-]*$"),
    ],
)
def test_bad_values_name_file_line_key_and_what_is_allowed(
    make_project: MakeProject, text: str, line: int, key: str, allowed: str
) -> None:
    message = error_for(make_project, text)
    assert message.startswith(f"supabase/config.toml:{line}: "), message
    assert key in message and allowed in message


def test_a_key_is_found_on_its_own_line_among_many(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    text = stock_supabase_config.replace('policy = "per_worker"', 'policy = "turbo"')
    line = text.splitlines().index('policy = "turbo"') + 1
    assert error_for(make_project, text).startswith(f"supabase/config.toml:{line}: [edge_runtime] policy")


def test_hard_limit_below_the_soft_one_points_at_the_key_set(make_project: MakeProject) -> None:
    message = error_for(make_project, "[edge_runtime]\n\ncpu_time_hard_limit_ms = 500\n")
    assert message.startswith("supabase/config.toml:3: [edge_runtime] cpu_time_hard_limit_ms")


def test_zero_turns_either_cpu_limit_off_without_conflict(make_project: MakeProject) -> None:
    root = make_project("[edge_runtime]\ncpu_time_soft_limit_ms = 5000\ncpu_time_hard_limit_ms = 0\n")
    assert load(root).limits.cpu_time_hard_limit_ms == 0


def test_toml_syntax_error_gives_line_and_column(make_project: MakeProject) -> None:
    message = error_for(make_project, '[api]\nport = 54321\n\n[edge_runtime\npolicy = "oneshot"\n')
    assert message.startswith("supabase/config.toml:4: not valid TOML (column")


@pytest.mark.parametrize(
    ("environ", "overrides", "needle"),
    [
        ({"EDGECLI_POLICY": "turbo"}, None, "EDGECLI_POLICY"),
        ({}, Overrides(policy="turbo"), "--policy"),
        ({"EDGECLI_PORT": "http"}, None, "EDGECLI_PORT"),
        ({"EDGECLI_PORT": "0"}, None, "EDGECLI_PORT"),
        ({}, Overrides(port=99999), "--port 99999"),
        ({"EDGECLI_NO_VERIFY_JWT": "maybe"}, None, "EDGECLI_NO_VERIFY_JWT"),
        ({"EDGECLI_ENV_FILE": "/nonexistent/.env"}, None, "EDGECLI_ENV_FILE"),
        ({}, Overrides(env_file=Path("no-such.env")), "--env-file"),
    ],
)
def test_bad_environment_and_flags_are_usage_errors(
    make_project: MakeProject, environ: dict[str, str], overrides: Overrides | None, needle: str
) -> None:
    with pytest.raises(UsageError) as info:
        load_config(make_project(), overrides, environ=environ)
    assert info.value.exit_code == 2 and needle in str(info.value)


def test_missing_config_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFoundError, match="edgecli init"):
        load(tmp_path)


# --- function discovery ---------------------------------------------------------------------------------


def test_discovery_skips_what_it_cannot_serve_and_says_why(
    make_project: MakeProject, hello_source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgecli.config.functions.deno_binary", lambda: "/opt/deno")
    root = make_project(
        "[functions.off]\nenabled = false\n[functions.ghost]\nverify_jwt = false\n",
        {
            "hello": hello_source,
            "off": hello_source,
            "_shared/util.py": "X = 1\n",
            ".hidden/index.py": hello_source,
            "deno/index.ts": "Deno.serve(() => new Response('hi'))\n",
            "empty/README.md": "nothing here\n",
            "bad name/index.py": hello_source,
        },
    )
    config = load(root)
    assert list(config.functions) == ["deno", "hello"]
    assert config.functions["deno"].runtime == "deno" and config.functions["hello"].runtime == "python"
    assert config.functions["deno"].entrypoint.name == "index.ts"
    skipped = dict(line.split(": ", 1) for line in config.skipped)
    assert set(skipped) == {"bad name", "empty", "ghost", "off"}  # _shared and .hidden: silent
    assert "enabled = false" in skipped["off"]
    assert "does not exist" in skipped["empty"] and "does not exist" in skipped["ghost"]
    assert "not a valid function name" in skipped["bad name"]


def test_a_typescript_function_without_deno_is_skipped_with_the_install_line(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgecli.config.functions.deno_binary", lambda: None)
    root = make_project(
        '[functions.deno]\nentrypoint = "./functions/deno/index.ts"\n', {"deno/index.ts": "export {}\n"}
    )
    config = load(root)
    assert dict(config.functions) == {}
    assert config.skipped == (
        "deno: supabase/functions/deno/index.ts needs Deno: install it with `pip install 'edgecli[deno]'` "
        "(or put `deno` on PATH)",
    )


def test_an_entrypoint_neither_python_nor_typescript_is_skipped(make_project: MakeProject) -> None:
    root = make_project('[functions.rb]\nentrypoint = "./functions/rb/index.rb"\n', {"rb/index.rb": "1\n"})
    (reason,) = load(root).skipped
    assert "index.rb is neither Python nor TypeScript/JavaScript" in reason


def test_block_with_its_own_entrypoint(make_project: MakeProject, hello_source: str) -> None:
    root = make_project(
        '[functions.alias]\nentrypoint = "./functions/real/main.py"\n', {"real/main.py": hello_source}
    )
    config = load(root)
    alias = config.functions["alias"]
    assert alias.entrypoint == root.resolve() / "supabase" / "functions" / "real" / "main.py"
    assert alias.directory == alias.entrypoint.parent
    assert "real: no entrypoint" in config.skipped[0]  # its folder has no index.py of its own


def test_only_serves_the_named_functions(make_project: MakeProject, hello_source: str) -> None:
    root = make_project("", {"a": hello_source, "b": hello_source, "c/index.ts": ""})
    config = load(root, Overrides(only=("b",)))
    assert list(config.functions) == ["b"] and config.skipped == ()


@pytest.mark.parametrize(("name", "needle"), [("nope", "functions: a, b"), ("c", "needs Deno")])
def test_only_with_an_unknown_or_unservable_name_is_a_usage_error(
    make_project: MakeProject, hello_source: str, name: str, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgecli.config.functions.deno_binary", lambda: None)
    root = make_project("", {"a": hello_source, "b": hello_source, "c/index.ts": ""})
    with pytest.raises(UsageError, match=needle) as info:
        load(root, Overrides(only=(name,)))
    assert info.value.exit_code == 2


def test_unknown_key_in_a_function_block_is_a_warning(make_project: MakeProject) -> None:
    config = load(make_project("[functions.hello]\nverify_jwts = false\n", ["hello"]))
    assert len(config.warnings) == 1 and "[functions.hello] verify_jwts" in config.warnings[0]
    assert config.warnings[0].startswith("supabase/config.toml:2:")


def test_project_id_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "supabase").mkdir()
    (tmp_path / "supabase" / "config.toml").write_text('project_id = "demo-project"\n')
    assert load_config(tmp_path).project_id == "demo-project"
    (tmp_path / "supabase" / "config.toml").write_text("[api]\nport = 1234\n")
    assert load_config(tmp_path).project_id == ""
