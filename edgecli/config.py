"""The one frozen `Config`, built once per command: defaults < config.toml < environment < CLI flags.

The types come first (others code against them); loading — TOML parsing, validation with file:line
errors, function discovery — follows. The loader never prints: problems that do not stop it end up in
`Config.warnings` / `Config.skipped` for the command to show.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

from edgecli.deno import INSTALL_HINT as DENO_INSTALL_HINT
from edgecli.deno import deno_binary
from edgecli.errors import ConfigError, ProjectNotFoundError, UsageError

if TYPE_CHECKING:
    from edgecli.host.signing_keys import SigningKey

Policy = Literal["per_worker", "oneshot", "per_request"]
POLICIES: tuple[Policy, ...] = ("per_worker", "oneshot", "per_request")

DEFAULT_PORT = 54321
DEFAULT_HOST = "127.0.0.1"
# Supabase's local default JWT secret (what `supabase start` uses when [auth] jwt_secret is unset).
DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DEFAULT_DB_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
DEFAULT_EVENT_RETENTION = 200_000
DEFAULT_EVENT_RETENTION_MB = 100


# Read once: os.cpu_count() reads sysfs on every call, and pools ask on every request.
CPU_COUNT = os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """Resource limits and pool sizing; `[edge_runtime]` defaults, overridable per function. 0 = off."""

    max_parallelism: int = 0
    wall_clock_limit_sec: float = 400
    cpu_time_soft_limit_ms: int = 1000
    cpu_time_hard_limit_ms: int = 2000
    memory_limit_mb: int = 256
    request_wait_timeout_ms: int = 10000
    request_idle_timeout_sec: float = 150
    graceful_exit_timeout_sec: float = 15
    boot_timeout_sec: float = 30  # a module still importing after this long is a boot error (503)
    max_body_mb: float = 20

    @property
    def parallelism(self) -> int:
        """Workers per function (oneshot: concurrent fresh instances); 0 in the file means one per CPU."""
        return self.max_parallelism or CPU_COUNT


LIMIT_KEYS: tuple[str, ...] = tuple(Limits.__dataclass_fields__)


@dataclass(frozen=True)
class FunctionConfig:
    """One servable function: a folder under supabase/functions/ and/or a [functions.NAME] block."""

    name: str
    entrypoint: Path  # absolute path to the entrypoint (.py, or .ts/.js for Deno)
    directory: Path  # absolute path to supabase/functions/NAME
    verify_jwt: bool = True
    limits: Limits = field(default_factory=Limits)
    env_file: Path | None = None  # supabase/functions/NAME/.env when it exists
    static_globs: tuple[str, ...] = ()  # `static_files` as written, relative to supabase/
    static_files: tuple[Path, ...] = ()  # the files they match now (absolute)
    dependencies: Path | None = None  # requirements.txt, else a pyproject.toml with dependencies

    @property
    def runtime(self) -> Literal["python", "deno"]:
        return "deno" if self.entrypoint.suffix in DENO_SUFFIXES else "python"


@dataclass(frozen=True)
class Overrides:
    """What CLI flags say; None means "not given" so lower layers show through."""

    policy: str | None = None
    port: int | None = None
    host: str | None = None
    env_file: Path | None = None
    no_verify_jwt: bool = False
    reload: bool | None = None
    json_output: bool = False
    only: tuple[str, ...] = ()
    inspect: str | None = None  # --inspect: HOST:PORT the debugger listens on (serve's one named function)
    inspect_mode: str = "run"
    prod: bool = False  # `serve --prod`: the container contract (see _prod_settings)
    store: bool | None = None  # --store / --no-store; None: on in dev, off in prod


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know, resolved once and passed down."""

    project_dir: Path  # the directory holding supabase/
    policy: Policy = "per_worker"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    verify_jwt: bool = True  # False: --no-verify-jwt switches verification off for every function
    reload: bool = True
    json_output: bool = False
    jwt_secret: str = DEFAULT_JWT_SECRET
    signing_keys_path: Path | None = None  # [auth] signing_keys_path, resolved
    signing_keys: tuple[SigningKey, ...] = ()
    db_url: str = DEFAULT_DB_URL
    env_file: Path | None = None  # the common env file: --env-file, else supabase/functions/.env if present
    secrets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    functions: Mapping[str, FunctionConfig] = field(default_factory=lambda: MappingProxyType({}))
    skipped: tuple[str, ...] = ()  # one readable line per function folder that is not served, and why
    warnings: tuple[str, ...] = ()
    event_retention: int = DEFAULT_EVENT_RETENTION
    event_retention_mb: int = DEFAULT_EVENT_RETENTION_MB  # the store's size in MB, at most
    project_id: str = ""  # config.toml's top-level project_id (Supabase's name for the project), if any
    inspect: str | None = None  # HOST:PORT of the debugger for the (one) function served, if inspecting
    inspect_mode: str = "run"  # run | brk | wait
    prod: bool = False  # serve as in a container: no reload, JSON lines, /_internal/health, $PORT
    store: bool = True  # record events in the event store
    state_root: Path | None = None  # EDGECLI_STATE_DIR: runtime state kept away from supabase/.temp

    @property
    def supabase_dir(self) -> Path:
        return self.project_dir / "supabase"

    @property
    def config_file(self) -> Path:
        return self.supabase_dir / "config.toml"

    @property
    def functions_dir(self) -> Path:
        return self.supabase_dir / "functions"

    @property
    def state_dir(self) -> Path:
        return self.state_root or self.supabase_dir / ".temp" / "edgecli"

    @property
    def events_db(self) -> Path:
        return self.state_dir / "events.db"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


# ---------------------------------------------------------------------------------------------------------
# Loading. The file is parsed with tomllib (fast, exact positions for syntax errors); keys' line numbers are
# found by scanning the text, because parsed TOML values do not remember where they came from.

FUNCTION_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DEFAULT_ENTRYPOINT = "index.py"
ENV_POLICY = "EDGECLI_POLICY"
ENV_PORT = "EDGECLI_PORT"
ENV_HOST = "EDGECLI_HOST"
ENV_NO_VERIFY_JWT = "EDGECLI_NO_VERIFY_JWT"
ENV_ENV_FILE = "EDGECLI_ENV_FILE"
ENV_PLATFORM_PORT = "PORT"  # set by Knative, Cloud Run and most container platforms
PROD_HOST = "0.0.0.0"
# Where serve keeps its runtime state (the event store) instead of supabase/.temp/edgecli: the test
# plugin's servers write theirs in pytest's temporary directory, never into the project.
ENV_STATE_DIR = "EDGECLI_STATE_DIR"

# (type, lowest, highest) per limit key: generous maxima, so that only typos and unit mix-ups are refused.
_LIMIT_SPECS: dict[str, tuple[type, int, int]] = {
    "max_parallelism": (int, 0, 1024),
    "wall_clock_limit_sec": (float, 0, 86_400),
    "cpu_time_soft_limit_ms": (int, 0, 3_600_000),
    "cpu_time_hard_limit_ms": (int, 0, 3_600_000),
    "memory_limit_mb": (int, 0, 1_048_576),
    "request_wait_timeout_ms": (int, 0, 3_600_000),
    "request_idle_timeout_sec": (float, 0, 86_400),
    "graceful_exit_timeout_sec": (float, 0, 3_600),
    "boot_timeout_sec": (float, 0, 3_600),
    "max_body_mb": (float, 0, 1_048_576),
}
_RETENTION_RANGE = (1, 100_000_000)
_RETENTION_MB_RANGE = (1, 1_000_000)
_PORT_RANGE = (1, 65_535)
# Keys Supabase itself puts in [edge_runtime]; edgecli accepts them (inspector_port, deno_version unused).
_EDGE_RUNTIME_KEYS = frozenset({"enabled", "policy", "inspector_port", "deno_version", "secrets"})
_EDGECLI_EDGE_RUNTIME_KEYS = frozenset({*LIMIT_KEYS, "event_retention", "event_retention_mb"})
_FUNCTION_KEYS = frozenset({"enabled", "verify_jwt", "entrypoint", "static_files", *LIMIT_KEYS})
_SUPABASE_FUNCTION_KEYS = frozenset({"import_map", "static"})  # Deno-only: accepted and ignored
# Entrypoints Deno serves (a stock Supabase function is index.ts), tried when there is no index.py.
DENO_ENTRYPOINTS = ("index.ts", "index.tsx", "index.js", "index.jsx", "index.mjs")
DENO_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs")
_ENV_REF = re.compile(r"^env\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class _Source:
    """config.toml's text and how to point at a key in it."""

    shown: str  # the path as the user should read it: relative to the project dir
    text: str

    def line_of(self, table: tuple[str, ...], key: str | None = None) -> int | None:
        """Line of `key` inside `[table]` (or of the table header), None when it cannot be found."""
        header_line: int | None = None
        current: tuple[str, ...] = ()
        for number, raw in enumerate(self.text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("[") and not line.startswith("[["):
                current = _header_path(line)
                if current == table and header_line is None:
                    header_line = number
                continue
            match = _KEY_LINE.match(line)
            if key is not None and current == table and match and _unquote(match.group(1)) == key:
                return number
        return header_line

    def where(self, table: tuple[str, ...], key: str | None = None) -> str:
        line = self.line_of(table, key)
        return f"{self.shown}:{line}" if line else self.shown

    def error(self, table: tuple[str, ...], key: str | None, problem: str, fix: str = "") -> ConfigError:
        fix = fix or f"Fix it in {self.shown}."
        return ConfigError(f"{self.where(table, key)}: {_name(table, key)} {problem}. {fix}")


_KEY_LINE = re.compile(r"""^("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _header_path(line: str) -> tuple[str, ...]:
    inner = line[1 : line.find("]")] if "]" in line else line[1:]
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""", inner)
    return tuple(_unquote(part.strip()) for part in parts)


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def _name(table: tuple[str, ...], key: str | None) -> str:
    if not table:
        return key or ""
    header = f"[{'.'.join(table)}]"
    return f"{header} {key}" if key else header


def _show(value: object) -> str:
    """A value the way it looks in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def load_config(
    project_dir: Path,
    overrides: Overrides | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    with_secrets: bool = True,
) -> Config:
    """Build the Config for the project at `project_dir`. Raises ConfigError (exit 2) on bad input.

    Precedence: defaults < supabase/config.toml < environment (EDGECLI_*) < CLI flags (`overrides`).
    `environ` defaults to the process environment (tests pass their own). Only serve hands secrets to
    functions: other commands pass `with_secrets=False`, so an `env(NAME)` unset in their shell is no error.
    """
    over = overrides or Overrides()
    env = os.environ if environ is None else environ
    project_dir = project_dir.resolve()
    src, data = _read_file(project_dir)
    edge = _table(src, data, ("edge_runtime",))
    limits = _read_limits(src, ("edge_runtime",), edge, Limits())
    warnings = _unknown_edge_runtime_keys(src, edge)
    secrets, secret_warnings = (
        _read_secrets(src, _table(src, edge, ("edge_runtime", "secrets")), env) if with_secrets else ({}, [])
    )
    verify_jwt = not (over.no_verify_jwt or _env_flag(env, ENV_NO_VERIFY_JWT))
    blocks = _table(src, data, ("functions",))
    found = _Discovery(src, project_dir / "supabase", blocks, limits, verify_jwt).run()
    keys_path, keys = _resolve_signing_keys(src, data, project_dir / "supabase")
    functions, skipped = _select(found, over.only)
    if over.inspect is not None:
        functions = {name: _inspected(fn) for name, fn in functions.items()}
    config = Config(
        project_dir=project_dir,
        policy=_resolve_policy(src, edge, env, over),
        host=over.host or env.get(ENV_HOST) or DEFAULT_HOST,
        port=_resolve_port(src, data, env, over),
        verify_jwt=verify_jwt,
        reload=True if over.reload is None else over.reload,
        json_output=over.json_output,
        inspect=over.inspect,
        inspect_mode=over.inspect_mode,
        jwt_secret=_resolve_jwt_secret(src, data, env),
        signing_keys_path=keys_path,
        signing_keys=keys,
        db_url=_resolve_db_url(src, data),
        env_file=_resolve_env_file(project_dir, env, over),
        secrets=MappingProxyType(secrets),
        limits=limits,
        functions=MappingProxyType(functions),
        skipped=skipped,
        warnings=(*warnings, *secret_warnings, *found.warnings),
        event_retention=_read_int(src, ("edge_runtime",), "event_retention", edge, *_RETENTION_RANGE)
        or DEFAULT_EVENT_RETENTION,
        event_retention_mb=_read_int(src, ("edge_runtime",), "event_retention_mb", edge, *_RETENTION_MB_RANGE)
        or DEFAULT_EVENT_RETENTION_MB,
        project_id=data["project_id"] if isinstance(data.get("project_id"), str) else "",
        state_root=Path(env[ENV_STATE_DIR]).resolve() if env.get(ENV_STATE_DIR) else None,
        store=over.store is not False,
    )
    return _prod_settings(config, env, over) if over.prod else config


def _prod_settings(config: Config, env: Mapping[str, str], over: Overrides) -> Config:
    """`serve --prod` follows the container contract of Knative and Cloud Run: every interface, the port
    the platform puts in $PORT (else --port, as in dev), logs as JSON lines, no file watching, and no
    event store unless --store asks for one (a container's disk is usually neither kept nor read)."""
    port = config.port
    text = env.get(ENV_PLATFORM_PORT, "").strip()
    if text:
        lo, hi = _PORT_RANGE
        if not (text.isdigit() and lo <= int(text) <= hi):
            raise UsageError(
                f"environment variable {ENV_PLATFORM_PORT}={text!r} is not a port; allowed: a number from "
                f"{lo} to {hi}. `edgecli serve --prod` listens on $PORT when it is set: fix or unset it."
            )
        port = int(text)
    return replace(
        config,
        prod=True,
        host=over.host or env.get(ENV_HOST) or PROD_HOST,
        port=port,
        reload=False,
        json_output=True,
        store=over.store is True,
    )


def _read_file(project_dir: Path) -> tuple[_Source, dict[str, Any]]:
    path = project_dir / "supabase" / "config.toml"
    shown = "supabase/config.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectNotFoundError(
            f"{shown} not found in {project_dir}. Run `edgecli init` there to create it, or pass "
            "--workdir with the directory that holds supabase/config.toml."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{shown}: cannot be read ({exc}). Check the file's permissions and encoding."
        ) from None
    return _Source(shown, text), parse_toml(text, shown)


def parse_toml(text: str, shown: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a ConfigError naming `shown`, the line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(shown, exc) from None


def _syntax_error(shown: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    where = f"{shown}:{match.group(1)}" if match else shown
    what = message[: match.start()].strip() if match else message
    column = f" (column {match.group(2)})" if match else ""
    return ConfigError(
        f"{where}: not valid TOML{column}: {what}. Fix the syntax; the format is described at "
        "https://toml.io."
    )


def _table(src: _Source, parent: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The table at path[-1] inside `parent`, or {} when absent; anything else is a config error."""
    value = parent.get(path[-1], {})
    if not isinstance(value, dict):
        raise src.error(path[:-1], path[-1], f"is {_show(value)}, but must be a table", "")
    return value


def _read_number(
    src: _Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], kind: type, lo: int, hi: int
) -> int | float | None:
    """`data[key]` checked against type and range, None when absent. Booleans are not numbers here."""
    if key not in data:
        return None
    value = data[key]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_float = kind is float and isinstance(value, float) and math.isfinite(value)
    allowed = f"allowed: a {'whole ' if kind is int else ''}number from {lo} to {hi}"
    if not (is_int or is_float):
        raise src.error(table, key, f"is {_show(value)}; {allowed}")
    if not lo <= value <= hi:
        raise src.error(table, key, f"is {_show(value)}, out of range; {allowed}")
    return float(value) if kind is float else value


def _read_int(
    src: _Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], lo: int, hi: int
) -> int | None:
    value = _read_number(src, table, key, data, int, lo, hi)
    return None if value is None else int(value)


def _read_bool(
    src: _Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], default: bool
) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise src.error(table, key, f"is {_show(value)}; allowed: true or false (without quotes)")
    return value


def _read_limits(src: _Source, table: tuple[str, ...], data: Mapping[str, Any], base: Limits) -> Limits:
    """`base` with the limit keys set in `data` applied; soft CPU must not exceed hard CPU."""
    values: dict[str, Any] = {}
    for key, (kind, lo, hi) in _LIMIT_SPECS.items():
        value = _read_number(src, table, key, data, kind, lo, hi)
        if value is not None:
            values[key] = value
    limits = replace(base, **values)
    soft, hard = limits.cpu_time_soft_limit_ms, limits.cpu_time_hard_limit_ms
    if soft and hard and soft > hard:
        key = "cpu_time_soft_limit_ms" if "cpu_time_soft_limit_ms" in values else "cpu_time_hard_limit_ms"
        raise src.error(
            table,
            key,
            f"makes the CPU soft limit ({soft} ms) exceed the hard limit ({hard} ms)",
            "Keep cpu_time_soft_limit_ms at or below cpu_time_hard_limit_ms (0 turns either off) in "
            f"{src.shown}.",
        )
    return limits


def _unknown_edge_runtime_keys(src: _Source, edge: Mapping[str, Any]) -> list[str]:
    _read_bool(src, ("edge_runtime",), "enabled", edge, True)  # accepted for Supabase; only type-checked
    known = sorted(_EDGE_RUNTIME_KEYS | _EDGECLI_EDGE_RUNTIME_KEYS)
    return [
        f"{src.where(('edge_runtime',), key)}: [edge_runtime] {key} is not a key edgecli knows and is "
        f"ignored (known keys: {', '.join(known)})."
        for key in edge
        if key not in known
    ]


def _read_secrets(
    src: _Source, data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    table = ("edge_runtime", "secrets")
    secrets: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in data.items():
        if not isinstance(value, str):
            raise src.error(
                table,
                key,
                f"is {_show(value)}; secrets must be strings",
                f'Quote the value ({key} = "...") or write "env(NAME)" to read it from the host '
                f"environment, in {src.shown}.",
            )
        if key.upper().startswith("SUPABASE_"):
            warnings.append(
                f"{src.where(table, key)}: secret {key} is ignored: SUPABASE_* names are reserved for the "
                "values edgecli injects into every function."
            )
            continue
        secrets[key] = _substitute(src, table, key, value, env)
    return secrets, warnings


def env_reference(value: object) -> str | None:
    """NAME when `value` is an "env(NAME)" reference to the host environment, else None."""
    match = _ENV_REF.match(value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def _substitute(src: _Source, table: tuple[str, ...], key: str, value: str, env: Mapping[str, str]) -> str:
    """`env(NAME)` → the host's NAME, as the Supabase CLI does; any other string is taken literally."""
    name = env_reference(value)
    if name is None:
        return value
    if name not in env:
        raise src.error(
            table,
            key,
            f"is {_show(value)}, but {name} is not set in the environment",
            f"Set {name} before running edgecli (e.g. `export {name}=...`), or write the value itself "
            f"in {src.shown}.",
        )
    return env[name]


# --- values the environment and CLI flags may override -------------------------------------------------


def _resolve_policy(src: _Source, edge: Mapping[str, Any], env: Mapping[str, str], over: Overrides) -> Policy:
    allowed = ", ".join(f'"{p}"' for p in POLICIES)
    in_file = edge.get("policy", "per_worker")
    if in_file not in POLICIES:  # checked even when overridden: the file is wrong either way
        raise src.error(
            ("edge_runtime",),
            "policy",
            f"is {_show(in_file)}; allowed: {allowed}",
            f"Fix it in {src.shown}, or override it with `edgecli serve --policy P`.",
        )
    for value, origin in ((over.policy, "--policy"), (env.get(ENV_POLICY) or None, ENV_POLICY)):
        if value is None:
            continue
        if value not in POLICIES:
            raise UsageError(f"{origin} is {_show(value)}, which is not a worker policy; allowed: {allowed}.")
        return cast(Policy, value)
    return cast(Policy, in_file)


def _resolve_port(src: _Source, data: Mapping[str, Any], env: Mapping[str, str], over: Overrides) -> int:
    in_file = _read_int(src, ("api",), "port", _table(src, data, ("api",)), *_PORT_RANGE)
    lo, hi = _PORT_RANGE
    if over.port is not None:
        # 0: any free port, as the system picks it (serve records where it listens: edgecli/listening.py)
        if not (over.port == 0 or lo <= over.port <= hi):
            raise UsageError(
                f"--port {over.port} is out of range; allowed: a port from {lo} to {hi}, or 0 for any "
                "free one."
            )
        return over.port
    text = env.get(ENV_PORT, "").strip()
    if text:
        if not (text.isdigit() and lo <= int(text) <= hi):
            raise UsageError(
                f"environment variable {ENV_PORT}={text!r} is not a port; allowed: a number from {lo} to "
                f"{hi}. Fix or unset it."
            )
        return int(text)
    return in_file or DEFAULT_PORT


def _resolve_jwt_secret(src: _Source, data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    auth = _table(src, data, ("auth",))
    value = auth.get("jwt_secret")
    if value is None:
        return DEFAULT_JWT_SECRET
    if not isinstance(value, str) or not value.strip():
        raise src.error(("auth",), "jwt_secret", f"is {_show(value)}; allowed: a non-empty string")
    return _substitute(src, ("auth",), "jwt_secret", value, env)


def _resolve_signing_keys(
    src: _Source, data: Mapping[str, Any], supabase_dir: Path
) -> tuple[Path | None, tuple[SigningKey, ...]]:
    """`[auth] signing_keys_path`: a JSON array of private JWKs (`supabase gen signing-key`), relative to
    supabase/. The key material is only loaded (and cryptography imported) when the key is set."""
    value = _table(src, data, ("auth",)).get("signing_keys_path")
    if value is None:
        return None, ()
    table, key = ("auth",), "signing_keys_path"
    fix = (
        "Point it at the file `supabase gen signing-key` writes (a JSON array of private JWKs), e.g. "
        f'signing_keys_path = "./signing_keys.json", in {src.shown}.'
    )
    if not isinstance(value, str) or not value.strip():
        raise src.error(table, key, f"is {_show(value)}; allowed: a path relative to supabase/", fix)
    path = (supabase_dir / value).resolve()
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise src.error(table, key, f"names {value}, which does not exist", fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise src.error(table, key, f"names {value}, which cannot be read as JSON ({exc})", fix) from None
    if isinstance(parsed, dict) and isinstance(parsed.get("keys"), list):
        parsed = parsed["keys"]  # a JWKS object rather than a bare array
    if not isinstance(parsed, list) or not all(isinstance(k, dict) for k in parsed):
        raise src.error(table, key, f"names {value}, which is not a JSON array of JWK objects", fix)
    from edgecli.host.signing_keys import SigningKeyError, load_signing_keys

    try:
        return path, load_signing_keys(parsed)
    except SigningKeyError as exc:
        raise src.error(table, key, f"names {value}, whose {exc}", fix) from None


def _resolve_db_url(src: _Source, data: Mapping[str, Any]) -> str:
    port = _read_int(src, ("db",), "port", _table(src, data, ("db",)), *_PORT_RANGE)
    return f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres" if port else DEFAULT_DB_URL


def _resolve_env_file(project_dir: Path, env: Mapping[str, str], over: Overrides) -> Path | None:
    if over.env_file is not None:
        return _existing_file(over.env_file, "--env-file")
    if env.get(ENV_ENV_FILE):
        return _existing_file(Path(env[ENV_ENV_FILE]), f"environment variable {ENV_ENV_FILE}")
    default = project_dir / "supabase" / "functions" / ".env"
    return default if default.is_file() else None


def _existing_file(path: Path, origin: str) -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise UsageError(
            f"{origin} names {path}, which is not a file. Pass an existing env file (a relative path is "
            "relative to the current directory)."
        )
    return resolved


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(
        f"environment variable {name}={env[name]!r} is not a yes/no value; use 1, true, yes or on to "
        "switch it on, or 0, false, no, off (or unset it)."
    )


# --- functions ---------------------------------------------------------------------------------------------


@dataclass
class _Discovery:
    """Builds the FunctionConfig of every function folder and [functions.NAME] block."""

    src: _Source
    supabase_dir: Path
    blocks: Mapping[str, Any]
    limits: Limits
    verify_jwt: bool
    served: dict[str, FunctionConfig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def run(self) -> _Discovery:
        functions_dir = self.supabase_dir / "functions"
        # `_shared`, `.git`, `__pycache__`…: not functions, and too ordinary to mention.
        folders = (
            {p.name for p in functions_dir.iterdir() if p.is_dir() and p.name[0] not in "_."}
            if functions_dir.is_dir()
            else set()
        )
        for name in sorted(folders | set(self.blocks)):
            self._one(name)
        return self

    def _one(self, name: str) -> None:
        table = ("functions", name)
        block = _table(self.src, self.blocks, table) if name in self.blocks else {}
        if not FUNCTION_NAME_RE.fullmatch(name):
            if name in self.blocks:
                raise self.src.error(
                    table, None, "is not a valid function name", "A name must match ^[A-Za-z][A-Za-z0-9_-]*$."
                )
            self.skipped[name] = "not a valid function name (must match ^[A-Za-z][A-Za-z0-9_-]*$)"
            return
        self.warnings.extend(self._unknown_keys(name, block))
        enabled = _read_bool(self.src, table, "enabled", block, True)
        verify_jwt = _read_bool(self.src, table, "verify_jwt", block, True)
        entrypoint = self._entrypoint(name, block)
        limits = _read_limits(self.src, table, block, self.limits)
        reason = self._skip_reason(name, enabled, entrypoint)
        if reason:
            self.skipped[name] = reason
            return
        directory = self.supabase_dir / "functions" / name
        if not directory.is_dir():  # a block whose entrypoint lives elsewhere inside supabase/
            directory = entrypoint.parent
        env_file = directory / ".env"
        globs, static = self._static_files(name, block)
        self.served[name] = FunctionConfig(
            name=name,
            entrypoint=entrypoint,
            directory=directory,
            verify_jwt=verify_jwt and self.verify_jwt,
            limits=limits,
            env_file=env_file if env_file.is_file() else None,
            static_globs=globs,
            static_files=static,
            dependencies=dependency_file(directory) if entrypoint.suffix == ".py" else None,
        )

    def _static_files(self, name: str, block: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[Path, ...]]:
        """`static_files`: globs relative to supabase/ (as Supabase writes them), and the files they match."""
        value = block.get("static_files", [])
        table = ("functions", name)
        example = f'static_files = ["./functions/{name}/*.html"]'
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.src.error(
                table,
                "static_files",
                f"is {_show(value)}; allowed: an array of globs relative to supabase/",
                f"Write it as {example} in {self.src.shown}.",
            )
        root = self.supabase_dir.resolve()
        found: dict[Path, None] = {}
        for pattern in value:
            relative = pattern.strip().removeprefix("./")
            if Path(relative).is_absolute() or ".." in Path(relative).parts:
                raise self.src.error(
                    table,
                    "static_files",
                    f"has {_show(pattern)}, which is outside supabase/",
                    f"Use globs relative to supabase/, e.g. {example}, in {self.src.shown}.",
                )
            for path in sorted(root.glob(relative)):
                # Never edgecli's own state (installed dependencies, the event store) under .temp/.
                if path.is_file() and path.relative_to(root).parts[0] != ".temp":
                    found[path] = None
        return tuple(value), tuple(found)

    def _unknown_keys(self, name: str, block: Mapping[str, Any]) -> list[str]:
        known = _FUNCTION_KEYS | _SUPABASE_FUNCTION_KEYS
        return [
            f"{self.src.where(('functions', name), key)}: [functions.{name}] {key} is not a key edgecli "
            f"knows and is ignored (known keys: {', '.join(sorted(_FUNCTION_KEYS))})."
            for key in block
            if key not in known
        ]

    def _entrypoint(self, name: str, block: Mapping[str, Any]) -> Path:
        value = block.get("entrypoint")
        if value is None:
            folder = self.supabase_dir / "functions" / name
            if not (folder / DEFAULT_ENTRYPOINT).is_file():  # a stock Supabase function: index.ts
                for other in DENO_ENTRYPOINTS:
                    if (folder / other).is_file():
                        return folder / other
            return folder / DEFAULT_ENTRYPOINT
        example = f'"./functions/{name}/index.py"'
        if not isinstance(value, str) or not value.strip():
            raise self.src.error(
                ("functions", name),
                "entrypoint",
                f"is {_show(value)}; allowed: a path relative to supabase/, e.g. {example}",
            )
        path = (self.supabase_dir / value).resolve()
        if not path.is_relative_to(self.supabase_dir.resolve()):
            raise self.src.error(
                ("functions", name),
                "entrypoint",
                f"is {_show(value)}, which is outside supabase/",
                f"Point it at a file inside supabase/, e.g. {example}, in {self.src.shown}.",
            )
        return path

    def _skip_reason(self, name: str, enabled: bool, entrypoint: Path) -> str | None:
        if not enabled:
            return f"disabled in config.toml ([functions.{name}] enabled = false)"
        shown = os.path.relpath(entrypoint, self.supabase_dir.resolve().parent)
        if entrypoint.is_dir():
            example = f" (e.g. {shown}/index.py)" if entrypoint.suffix not in (".py", *DENO_SUFFIXES) else ""
            return f"no entrypoint: {shown} is a directory; point entrypoint at a file{example}"
        if entrypoint.suffix not in (".py", *DENO_SUFFIXES):
            return (
                f"{shown} is neither Python nor TypeScript/JavaScript; point entrypoint at a .py, .ts or "
                ".js file"
            )
        if not entrypoint.is_file():
            return f"no entrypoint: {shown} does not exist"
        if entrypoint.suffix in DENO_SUFFIXES and deno_binary() is None:
            return f"{shown} needs Deno: {DENO_INSTALL_HINT}"
        return None


def _inspected(function: FunctionConfig) -> FunctionConfig:
    """A function being debugged: one worker (one debugger port), and no limit that would kill it while
    it stands at a breakpoint."""
    limits = replace(
        function.limits,
        max_parallelism=1,
        wall_clock_limit_sec=0,
        cpu_time_soft_limit_ms=0,
        cpu_time_hard_limit_ms=0,
        memory_limit_mb=0,
        request_wait_timeout_ms=3_600_000,  # requests queue behind one paused at a breakpoint
    )
    return replace(function, limits=limits)


def dependency_file(directory: Path) -> Path | None:
    """A function's own dependencies: requirements.txt, else pyproject.toml when it lists
    `[project] dependencies`."""
    requirements = directory / "requirements.txt"
    if requirements.is_file():
        return requirements
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return pyproject  # the installer reports what is wrong with it, as that function's boot error
    return pyproject if isinstance(project, dict) and project.get("dependencies") else None


def _select(found: _Discovery, only: tuple[str, ...]) -> tuple[dict[str, FunctionConfig], tuple[str, ...]]:
    """The functions to serve (all, or the ones named on the command line) and the skip notes to show."""
    if not only:
        return found.served, tuple(f"{name}: {reason}" for name, reason in found.skipped.items())
    for name in only:
        if name in found.skipped:
            raise UsageError(f"cannot serve {name}: {found.skipped[name]}.")
        if name not in found.served:
            known = ", ".join(found.served) or "none yet"
            hint = f" Create it with `edgecli new {name}`." if FUNCTION_NAME_RE.fullmatch(name) else ""
            raise UsageError(f"no function named {name!r} in this project (functions: {known}).{hint}")
    return {name: fn for name, fn in found.served.items() if name in only}, ()
