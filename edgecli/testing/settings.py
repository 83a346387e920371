"""The settings one test server runs with, and how they become serve's command line and environment.

Two tests asking for equal settings share a server, so these are frozen and hashable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecli.config import (
    ENV_ENV_FILE,
    ENV_HOST,
    ENV_NO_VERIFY_JWT,
    ENV_PORT,
    ENV_STATE_DIR,
    FUNCTION_NAME_RE,
    Config,
    load_config,
)
from edgecli.errors import EdgecliError

POLICIES = ("per_worker", "oneshot", "per_request")
ENV_FILE_NAME = "functions.env"  # written in the server's state dir when `env` is given


class SettingsError(ValueError):
    """Settings that cannot make a server: the message says which and how to fix them."""


@dataclass(frozen=True)
class ServeSettings:
    workdir: Path  # the directory holding supabase/config.toml
    policy: str | None = None
    verify_jwt: bool | None = None
    env: tuple[tuple[str, str], ...] = ()
    functions: tuple[str, ...] = ()

    @classmethod
    def make(
        cls,
        workdir: str | Path,
        policy: str | None = None,
        verify_jwt: bool | None = None,
        env: Mapping[str, str] | None = None,
        functions: Sequence[str] | None = None,
    ) -> ServeSettings:
        root = find_project(Path(workdir))
        if policy is not None and policy not in POLICIES:
            raise SettingsError(f"policy={policy!r} is not a worker policy: use one of {', '.join(POLICIES)}")
        if verify_jwt is not None and not isinstance(verify_jwt, bool):
            raise SettingsError(f"verify_jwt={verify_jwt!r}: use True, False, or None for the project's own")
        pairs = tuple(sorted((env or {}).items()))
        for key, value in pairs:
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise SettingsError(f"env={dict(pairs)!r}: names and values must be non-empty strings")
        names = (functions,) if isinstance(functions, str) else functions or ()
        for name in names:
            if not FUNCTION_NAME_RE.match(name):
                raise SettingsError(f"functions: {name!r} is not a function name (^[A-Za-z][A-Za-z0-9_-]*$)")
        return cls(root, policy, verify_jwt, pairs, tuple(names))

    def describe(self) -> str:
        shown = [str(self.workdir)]
        shown += [f"{key}={value!r}" for key, value in self._named() if value not in (None, (), {})]
        return " ".join(shown)

    def _named(self) -> list[tuple[str, object]]:
        return [
            ("policy", self.policy),
            ("verify_jwt", self.verify_jwt),
            ("env", dict(self.env)),
            ("functions", self.functions),
        ]

    def config(self) -> Config:
        try:
            return load_config(self.workdir)
        except EdgecliError as exc:
            raise SettingsError(str(exc)) from None

    def serve_args(self, port: int, state_dir: Path) -> list[str]:
        args = ["serve", *self.functions, "--workdir", str(self.workdir), "--port", str(port)]
        args += ["--host", "127.0.0.1", "--json", "--no-reload"]
        if self.policy is not None:
            args += ["--policy", self.policy]
        if self.verify_jwt is False:
            args.append("--no-verify-jwt")
        if self.env:
            args += ["--env-file", str(self._write_env_file(state_dir))]
        return args

    def serve_env(self, state_dir: Path) -> dict[str, str]:
        """This process's environment, minus what the command line says otherwise, plus the state dir."""
        env = {k: v for k, v in os.environ.items() if k not in (ENV_PORT, ENV_HOST)}
        if self.verify_jwt:
            env.pop(ENV_NO_VERIFY_JWT, None)
        env[ENV_STATE_DIR] = str(state_dir)
        return env

    def _write_env_file(self, state_dir: Path) -> Path:
        """The common env file serve would read (supabase/functions/.env or $EDGECLI_ENV_FILE), with
        `env` added on top: a function's own .env still wins, as it does over the common one."""
        from dotenv import dotenv_values

        base = Path(os.environ[ENV_ENV_FILE]) if os.environ.get(ENV_ENV_FILE) else None
        base = base or self.workdir / "supabase" / "functions" / ".env"
        values = {k: v for k, v in dotenv_values(base).items() if v is not None} if base.is_file() else {}
        values.update(self.env)
        path = state_dir / ENV_FILE_NAME
        path.write_text(
            "".join(f"{key}={_quoted(value)}\n" for key, value in values.items()), encoding="utf-8"
        )
        return path


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def find_project(start: Path) -> Path:
    """`start` or its nearest parent holding supabase/config.toml."""
    start = start.expanduser().resolve()
    for candidate in (start, *start.parents):
        if (candidate / "supabase" / "config.toml").is_file():
            return candidate
    raise SettingsError(
        f"no supabase/config.toml in {start} or any directory above it, so edgecli.testing has no project "
        "to serve. Run the tests from inside the project, or point at it: the `edge_workdir` ini option, "
        "@pytest.mark.edge(workdir=...), or EdgeServer(workdir)."
    )
