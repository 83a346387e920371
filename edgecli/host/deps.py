"""Per-function dependencies: the Python counterpart of a Supabase function's own `deno.json`.

A function folder's `requirements.txt` (or `pyproject.toml` with `[project] dependencies`) is installed
into `supabase/.temp/edgecli/deps/<hash>/`, keyed by what the file says (and the Python version), and
that folder goes first on the function's `sys.path` in its workers. So:
- two functions may pin different versions of one package: each has its own folder;
- an unchanged file is installed once and reused across reloads and runs (the folder is the cache);
- a changed file gets a new hash, hence a fresh install, and the reload that the change triggers
  recycles that function alone;
- the fork server never changes: a worker only gets one more folder on `sys.path` after the fork.

The install runs `uv pip install --target` where `uv` is on PATH, else `python -m pip install --target`,
with the function's folder as the working directory (so relative paths in the file work). A failed
install is that function's boot error, carrying the installer's own message. `python -m
edgecli.host.deps FILE...` installs ahead of serve, as `edgecli build`'s Dockerfile does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecli import events
from edgecli.config import FunctionConfig
from edgecli.events import Event, Level
from edgecli.runtime.parent import die_with_parent

COMPLETE_MARK = ".edgecli-complete"
MESSAGE_LINES = 15  # the tail of the installer's output kept in the boot error


class DependencyError(Exception):
    """The function's dependencies cannot be installed; the message is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Requirements:
    """What to install for one function: installer arguments and the hash that names its folder."""

    source: Path
    args: tuple[str, ...]  # `-r requirements.txt`, or the pyproject's dependency strings
    key: str


def read_requirements(path: Path) -> Requirements:
    """The install of `path` (requirements.txt or pyproject.toml). Raises DependencyError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DependencyError(f"cannot read {path.name}: {exc}") from None
    is_pyproject = path.name == "pyproject.toml"
    args = tuple(_pyproject_dependencies(path, text)) if is_pyproject else ("-r", path.name)
    version = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(f"{version}\0{path.name}\0{text}".encode()).hexdigest()[:16]
    return Requirements(path, args, digest)


def _pyproject_dependencies(path: Path, text: str) -> list[str]:
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        raise DependencyError(f"{path.name} is not valid TOML: {exc}") from None
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise DependencyError(f"{path.name}: [project] dependencies must be an array of strings")
    return deps


def installer_command(target: Path, args: tuple[str, ...]) -> list[str]:
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "pip", "install", "--quiet", "--python", sys.executable, "--target", str(target), *args]
    return [
        sys.executable,
        *("-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"),
        *("--target", str(target), *args),
    ]


class Dependencies:
    """Installs each function's dependencies once per content hash; concurrent boots share one install."""

    def __init__(self, deps_dir: Path, emit: Callable[[Event], None]) -> None:
        self.deps_dir = deps_dir
        self.emit = emit
        self._installs: dict[str, asyncio.Task[Path]] = {}

    async def ensure(self, function: FunctionConfig) -> Path | None:
        """The folder to put first on `function`'s sys.path (installing it first), None when it has no
        dependencies. Raises DependencyError."""
        if function.dependencies is None:
            return None
        wanted = read_requirements(function.dependencies)
        target = self.deps_dir / wanted.key
        if (target / COMPLETE_MARK).is_file():
            return target
        task = self._installs.get(wanted.key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.get_running_loop().create_task(self._install(function, wanted, target))
            self._installs[wanted.key] = task
        return await asyncio.shield(task)

    async def _install(self, function: FunctionConfig, wanted: Requirements, target: Path) -> Path:
        started = time.monotonic()
        self._log(function, "info", f"installing dependencies from {wanted.source.name} ({wanted.key})")
        staging = self.deps_dir / f".{wanted.key}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            await self._run(installer_command(staging, wanted.args), function.directory, wanted)
            (staging / COMPLETE_MARK).write_text(f"{wanted.source}\n", encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        took = time.monotonic() - started
        self._log(function, "info", f"installed dependencies from {wanted.source.name} in {took:.1f} s")
        return target

    async def _run(self, command: list[str], cwd: Path, wanted: Requirements) -> None:
        # Its own process group, killed as a whole when serve stops, and a parent-death signal for a
        # serve that is killed outright: no installer (or build it started) is left behind.
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        try:
            output, _ = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if proc.returncode != 0:
            lines = output.decode(errors="replace").strip().splitlines()[-MESSAGE_LINES:]
            raise DependencyError(
                f"installing {wanted.source.name} failed (exit status {proc.returncode}):\n"
                + "\n".join(lines)
            )

    def _log(self, function: FunctionConfig, level: Level, message: str) -> None:
        self.emit(events.log(message, level, function=function.name))

    async def close(self) -> None:
        """Stop installs still running (serve is shutting down)."""
        for task in self._installs.values():
            task.cancel()
        for task in self._installs.values():
            with contextlib.suppress(BaseException):
                await task


def main(argv: list[str]) -> int:
    """`python -m edgecli.host.deps FILE...`, from a project's root: install each function's dependency
    file (its requirements.txt or pyproject.toml) where serve looks for it, so that serve finds it
    installed. `edgecli build`'s Dockerfile runs this: a container installs nothing when it starts."""
    from edgecli.config import ENV_STATE_DIR, Config

    state_root = os.environ.get(ENV_STATE_DIR)  # as serve reads it (config/load.py)
    config = Config(project_dir=Path.cwd(), state_root=Path(state_root).resolve() if state_root else None)
    deps_dir = config.state_dir / "deps"
    installer = Dependencies(deps_dir, lambda event: print(event.message, flush=True))
    for name in argv:
        path = Path(name).resolve()
        function = FunctionConfig(path.parent.name, path.parent / "index.py", path.parent, dependencies=path)
        try:
            asyncio.run(installer.ensure(function))
        except DependencyError as exc:
            print(f"edgecli: {name}: {exc.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
