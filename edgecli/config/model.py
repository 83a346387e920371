"""The frozen types every command codes against — `Config`, `FunctionConfig`, `Limits`, `Overrides` — and
their defaults. Building them is `load.py`'s job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from edgecli.config.keys import SigningKey

Policy = Literal["per_worker", "oneshot", "per_request"]
POLICIES: tuple[Policy, ...] = ("per_worker", "oneshot", "per_request")

DEFAULT_PORT = 54321
DEFAULT_HOST = "127.0.0.1"
# Supabase's local default JWT secret (what `supabase start` uses when [auth] jwt_secret is unset).
DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DEFAULT_DB_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
DEFAULT_EVENT_RETENTION = 200_000
DEFAULT_EVENT_RETENTION_MB = 100
# How long a request's head (request line and headers) may take to arrive: a slow-loris bound.
DEFAULT_HEAD_TIMEOUT_SEC = 30.0
# A function whose entrypoint ends so is served by Deno.
DENO_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs")

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
    head_timeout_sec: float = DEFAULT_HEAD_TIMEOUT_SEC  # [edge_runtime] request_head_timeout_sec
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
