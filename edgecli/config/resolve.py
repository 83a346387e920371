"""Single values, each from its layers: the policy, host and port the environment and flags may override;
secrets and `env(NAME)`; the JWT secret, signing keys, database URL and the common env file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from edgecli.config.keys import SigningKey, SigningKeyError, load_signing_keys
from edgecli.config.model import (
    DEFAULT_DB_URL,
    DEFAULT_JWT_SECRET,
    DEFAULT_PORT,
    LIMIT_KEYS,
    POLICIES,
    Overrides,
    Policy,
)
from edgecli.config.source import Source, read_bool, read_int, show, table_in
from edgecli.errors import UsageError

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
RETENTION_RANGE = (1, 100_000_000)
RETENTION_MB_RANGE = (1, 1_000_000)
HEAD_TIMEOUT_RANGE = (0, 3_600)
PORT_RANGE = (1, 65_535)
# Keys Supabase itself puts in [edge_runtime]; edgecli accepts them (inspector_port, deno_version unused).
_EDGE_RUNTIME_KEYS = frozenset({"enabled", "policy", "inspector_port", "deno_version", "secrets"})
_EDGECLI_EDGE_RUNTIME_KEYS = frozenset(
    {*LIMIT_KEYS, "event_retention", "event_retention_mb", "request_head_timeout_sec"}
)
_ENV_REF = re.compile(r"^env\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def unknown_edge_runtime_keys(src: Source, edge: Mapping[str, Any]) -> list[str]:
    read_bool(src, ("edge_runtime",), "enabled", edge, True)  # accepted for Supabase; only type-checked
    known = sorted(_EDGE_RUNTIME_KEYS | _EDGECLI_EDGE_RUNTIME_KEYS)
    return [
        f"{src.where(('edge_runtime',), key)}: [edge_runtime] {key} is not a key edgecli knows and is "
        f"ignored (known keys: {', '.join(known)})."
        for key in edge
        if key not in known
    ]


def read_secrets(
    src: Source, data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    table = ("edge_runtime", "secrets")
    secrets: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in data.items():
        if not isinstance(value, str):
            raise src.error(
                table,
                key,
                f"is {show(value)}; secrets must be strings",
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


def _substitute(src: Source, table: tuple[str, ...], key: str, value: str, env: Mapping[str, str]) -> str:
    """`env(NAME)` → the host's NAME, as the Supabase CLI does; any other string is taken literally."""
    name = env_reference(value)
    if name is None:
        return value
    if name not in env:
        raise src.error(
            table,
            key,
            f"is {show(value)}, but {name} is not set in the environment",
            f"Set {name} before running edgecli (e.g. `export {name}=...`), or write the value itself "
            f"in {src.shown}.",
        )
    return env[name]


def resolve_policy(src: Source, edge: Mapping[str, Any], env: Mapping[str, str], over: Overrides) -> Policy:
    allowed = ", ".join(f'"{p}"' for p in POLICIES)
    in_file = edge.get("policy", "per_worker")
    if in_file not in POLICIES:  # checked even when overridden: the file is wrong either way
        raise src.error(
            ("edge_runtime",),
            "policy",
            f"is {show(in_file)}; allowed: {allowed}",
            f"Fix it in {src.shown}, or override it with `edgecli serve --policy P`.",
        )
    for value, origin in ((over.policy, "--policy"), (env.get(ENV_POLICY) or None, ENV_POLICY)):
        if value is None:
            continue
        if value not in POLICIES:
            raise UsageError(f"{origin} is {show(value)}, which is not a worker policy; allowed: {allowed}.")
        return cast(Policy, value)
    return cast(Policy, in_file)


def resolve_port(src: Source, data: Mapping[str, Any], env: Mapping[str, str], over: Overrides) -> int:
    in_file = read_int(src, ("api",), "port", table_in(src, data, ("api",)), *PORT_RANGE)
    lo, hi = PORT_RANGE
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


def resolve_jwt_secret(src: Source, data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    auth = table_in(src, data, ("auth",))
    value = auth.get("jwt_secret")
    if value is None:
        return DEFAULT_JWT_SECRET
    if not isinstance(value, str) or not value.strip():
        raise src.error(("auth",), "jwt_secret", f"is {show(value)}; allowed: a non-empty string")
    return _substitute(src, ("auth",), "jwt_secret", value, env)


def resolve_signing_keys(
    src: Source, data: Mapping[str, Any], supabase_dir: Path
) -> tuple[Path | None, tuple[SigningKey, ...]]:
    """`[auth] signing_keys_path`: a JSON array of private JWKs (`supabase gen signing-key`), relative to
    supabase/. The key material is only loaded (and cryptography imported) when the key is set."""
    value = table_in(src, data, ("auth",)).get("signing_keys_path")
    if value is None:
        return None, ()
    table, key = ("auth",), "signing_keys_path"
    fix = (
        "Point it at the file `supabase gen signing-key` writes (a JSON array of private JWKs), e.g. "
        f'signing_keys_path = "./signing_keys.json", in {src.shown}.'
    )
    if not isinstance(value, str) or not value.strip():
        raise src.error(table, key, f"is {show(value)}; allowed: a path relative to supabase/", fix)
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
    try:
        return path, load_signing_keys(parsed)
    except SigningKeyError as exc:
        raise src.error(table, key, f"names {value}, whose {exc}", fix) from None


def resolve_db_url(src: Source, data: Mapping[str, Any]) -> str:
    port = read_int(src, ("db",), "port", table_in(src, data, ("db",)), *PORT_RANGE)
    return f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres" if port else DEFAULT_DB_URL


def resolve_env_file(project_dir: Path, env: Mapping[str, str], over: Overrides) -> Path | None:
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


def env_flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(
        f"environment variable {name}={env[name]!r} is not a yes/no value; use 1, true, yes or on to "
        "switch it on, or 0, false, no, off (or unset it)."
    )
