"""What every deployment target needs to know about a project, worked out once from its config.

The image listens on CONTAINER_PORT (the port Knative and Cloud Run default $PORT to); probes ask
HEALTH_PATH. Secrets are never read: a manifest names the environment variables that config.toml reads
with `env(NAME)`, and the platform fills them in.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecli import project
from edgecli.config import Config, env_reference, load_config, parse_toml
from edgecli.errors import ConfigError
from edgecli.host.health import HEALTH_PATH

CONTAINER_PORT = 8080
APP_DIR = "/app"
# A pod is killed this long after the drain deadline at the latest: time for serve to kill what did not
# leave, stop the fork server and exit.
SHUTDOWN_MARGIN_S = 5
DEFAULT_NAME = "edgecli-functions"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class FunctionDeps:
    """A function's own dependencies: the file serve installs them from (its requirements.txt, else a
    pyproject.toml with `[project] dependencies`; relative to the project root), if it has one."""

    name: str
    file: str | None


@dataclass(frozen=True)
class DeploySpec:
    name: str  # a DNS-1035 label: the image, the Service, the Deployment
    port: int
    health_path: str
    container_concurrency: int  # requests one container takes at once; 0 = no limit
    timeout_seconds: int | None  # a request's longest life; None when the wall-clock limit is off
    grace_seconds: int  # SIGTERM → SIGKILL: at least graceful_exit_timeout_sec
    secret_env: tuple[str, ...]  # environment variables config.toml reads with env(NAME)
    deps: tuple[FunctionDeps, ...]
    functions: tuple[str, ...]
    deno: bool = False  # a TypeScript or JavaScript function is served: the image needs edgecli[deno]


class _AnyName(Mapping[str, str]):
    """The environment as a deploy command sees it: every `env(NAME)` is satisfied (by "", or the value
    when it happens to be set), because a manifest only names the variable; it never needs the value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __getitem__(self, key: str) -> str:
        return self.environ.get(key, "")

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


def load_spec(workdir: Path | None, environ: Mapping[str, str]) -> tuple[Config, DeploySpec]:
    config = load_config(project.find_project(workdir), environ=_AnyName(environ))
    return config, deploy_spec(config)


def deploy_spec(config: Config) -> DeploySpec:
    limits = [f.limits for f in config.functions.values()] or [config.limits]
    parallelism = [lim.max_parallelism for lim in limits]
    wall = max(lim.wall_clock_limit_sec for lim in limits)
    grace = max(lim.graceful_exit_timeout_sec for lim in [*limits, config.limits])
    return DeploySpec(
        name=service_name(config),
        port=CONTAINER_PORT,
        health_path=HEALTH_PATH,
        # max_parallelism 0 means one worker per CPU of wherever it runs: unknown here, so no limit.
        container_concurrency=0 if 0 in parallelism else sum(parallelism),
        timeout_seconds=math.ceil(wall) if all(lim.wall_clock_limit_sec for lim in limits) else None,
        grace_seconds=math.ceil(grace) + SHUTDOWN_MARGIN_S,
        secret_env=secret_env(config),
        deps=tuple(function_deps(config, name) for name in config.functions),
        functions=tuple(config.functions),
        deno=any(f.runtime == "deno" for f in config.functions.values()),
    )


def service_name(config: Config) -> str:
    raw = config.project_id or config.project_dir.name
    name = _NOT_DNS.sub("-", raw.lower()).strip("-")[:63].strip("-")
    if not name or not name[0].isalpha():
        name = f"fn-{name}".strip("-")[:63] if name else DEFAULT_NAME
    return name


def secret_env(config: Config) -> tuple[str, ...]:
    """The env(NAME) references of [edge_runtime.secrets] and [auth] jwt_secret, in file order."""
    data = parse_toml(config.config_file.read_text(encoding="utf-8"), "supabase/config.toml")
    secrets = _table(_table(data, "edge_runtime"), "secrets")
    values = [v for k, v in secrets.items() if not k.upper().startswith("SUPABASE_")]
    values.append(_table(data, "auth").get("jwt_secret"))
    names = (env_reference(value) for value in values)
    return tuple(dict.fromkeys(name for name in names if name))


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def function_deps(config: Config, name: str) -> FunctionDeps:
    source = config.functions[name].dependencies
    if source is not None and source.name == "pyproject.toml":
        _pyproject_dependencies(source, config.project_dir)  # a broken one is said now, not in the image
    shown = source.relative_to(config.project_dir).as_posix() if source is not None else None
    return FunctionDeps(name=name, file=shown)


def _pyproject_dependencies(path: Path, project_dir: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    shown = path.relative_to(project_dir).as_posix()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot be read as TOML ({exc}). Fix the file or remove it.") from None
    deps = data.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(
            f"{shown}: [project] dependencies must be an array of requirement strings, such as "
            '["httpx>=0.27"]. Fix it in that file.'
        )
    return tuple(deps)
