"""`load_config`: the layers put together, once per command — defaults < config.toml < environment <
CLI flags. The loader never prints: problems that do not stop it end up in `Config.warnings` /
`Config.skipped` for the command to show."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgecli.config.functions import Discovery, inspected, select_functions
from edgecli.config.model import (
    DEFAULT_EVENT_RETENTION,
    DEFAULT_EVENT_RETENTION_MB,
    DEFAULT_HEAD_TIMEOUT_SEC,
    DEFAULT_HOST,
    Config,
    Limits,
    Overrides,
)
from edgecli.config.resolve import (
    ENV_HOST,
    ENV_NO_VERIFY_JWT,
    ENV_PLATFORM_PORT,
    ENV_STATE_DIR,
    HEAD_TIMEOUT_RANGE,
    PORT_RANGE,
    PROD_HOST,
    RETENTION_MB_RANGE,
    RETENTION_RANGE,
    env_flag,
    read_secrets,
    resolve_db_url,
    resolve_env_file,
    resolve_jwt_secret,
    resolve_policy,
    resolve_port,
    resolve_signing_keys,
    unknown_edge_runtime_keys,
)
from edgecli.config.source import Source, read_file, read_int, read_limits, read_number, table_in
from edgecli.errors import UsageError


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
    src, data = read_file(project_dir)
    edge = table_in(src, data, ("edge_runtime",))
    limits = read_limits(src, ("edge_runtime",), edge, Limits())
    warnings = unknown_edge_runtime_keys(src, edge)
    secrets, secret_warnings = (
        read_secrets(src, table_in(src, edge, ("edge_runtime", "secrets")), env) if with_secrets else ({}, [])
    )
    verify_jwt = not (over.no_verify_jwt or env_flag(env, ENV_NO_VERIFY_JWT))
    blocks = table_in(src, data, ("functions",))
    found = Discovery(src, project_dir / "supabase", blocks, limits, verify_jwt).run()
    keys_path, keys = resolve_signing_keys(src, data, project_dir / "supabase")
    functions, skipped = select_functions(found, over.only)
    if over.inspect is not None:
        functions = {name: inspected(fn) for name, fn in functions.items()}
    config = Config(
        project_dir=project_dir,
        policy=resolve_policy(src, edge, env, over),
        host=over.host or env.get(ENV_HOST) or DEFAULT_HOST,
        port=resolve_port(src, data, env, over),
        verify_jwt=verify_jwt,
        reload=True if over.reload is None else over.reload,
        json_output=over.json_output,
        inspect=over.inspect,
        inspect_mode=over.inspect_mode,
        jwt_secret=resolve_jwt_secret(src, data, env),
        signing_keys_path=keys_path,
        signing_keys=keys,
        db_url=resolve_db_url(src, data),
        env_file=resolve_env_file(project_dir, env, over),
        secrets=MappingProxyType(secrets),
        limits=limits,
        functions=MappingProxyType(functions),
        skipped=skipped,
        warnings=(*warnings, *secret_warnings, *found.warnings),
        event_retention=read_int(src, ("edge_runtime",), "event_retention", edge, *RETENTION_RANGE)
        or DEFAULT_EVENT_RETENTION,
        event_retention_mb=read_int(src, ("edge_runtime",), "event_retention_mb", edge, *RETENTION_MB_RANGE)
        or DEFAULT_EVENT_RETENTION_MB,
        head_timeout_sec=_head_timeout(src, edge),
        project_id=data["project_id"] if isinstance(data.get("project_id"), str) else "",
        state_root=Path(env[ENV_STATE_DIR]).resolve() if env.get(ENV_STATE_DIR) else None,
        store=over.store is not False,
    )
    return _prod_settings(config, env, over) if over.prod else config


def _head_timeout(src: Source, edge: Mapping[str, Any]) -> float:
    value = read_number(src, ("edge_runtime",), "request_head_timeout_sec", edge, float, *HEAD_TIMEOUT_RANGE)
    return DEFAULT_HEAD_TIMEOUT_SEC if value is None else float(value)


def _prod_settings(config: Config, env: Mapping[str, str], over: Overrides) -> Config:
    """`serve --prod` follows the container contract of Knative and Cloud Run: every interface, the port
    the platform puts in $PORT (else --port, as in dev), logs as JSON lines, no file watching, and no
    event store unless --store asks for one (a container's disk is usually neither kept nor read)."""
    port = config.port
    text = env.get(ENV_PLATFORM_PORT, "").strip()
    if text:
        lo, hi = PORT_RANGE
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
