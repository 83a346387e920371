"""Which functions a project has: every folder under supabase/functions/ and every [functions.NAME] block
becomes a `FunctionConfig`, or a note saying why it is not served."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgecli.config.model import DENO_SUFFIXES, LIMIT_KEYS, FunctionConfig, Limits
from edgecli.config.source import Source, read_bool, read_limits, show, table_in
from edgecli.deno import INSTALL_HINT as DENO_INSTALL_HINT
from edgecli.deno import deno_binary
from edgecli.errors import UsageError

FUNCTION_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DEFAULT_ENTRYPOINT = "index.py"
# Entrypoints Deno serves (a stock Supabase function is index.ts), tried when there is no index.py.
DENO_ENTRYPOINTS = ("index.ts", "index.tsx", "index.js", "index.jsx", "index.mjs")
_FUNCTION_KEYS = frozenset({"enabled", "verify_jwt", "entrypoint", "static_files", *LIMIT_KEYS})
_SUPABASE_FUNCTION_KEYS = frozenset({"import_map", "static"})  # Deno-only: accepted and ignored


@dataclass
class Discovery:
    """Builds the FunctionConfig of every function folder and [functions.NAME] block."""

    src: Source
    supabase_dir: Path
    blocks: Mapping[str, Any]
    limits: Limits
    verify_jwt: bool
    served: dict[str, FunctionConfig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def run(self) -> Discovery:
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
        block = table_in(self.src, self.blocks, table) if name in self.blocks else {}
        if not FUNCTION_NAME_RE.fullmatch(name):
            if name in self.blocks:
                raise self.src.error(
                    table, None, "is not a valid function name", "A name must match ^[A-Za-z][A-Za-z0-9_-]*$."
                )
            self.skipped[name] = "not a valid function name (must match ^[A-Za-z][A-Za-z0-9_-]*$)"
            return
        self.warnings.extend(self._unknown_keys(name, block))
        enabled = read_bool(self.src, table, "enabled", block, True)
        verify_jwt = read_bool(self.src, table, "verify_jwt", block, True)
        entrypoint = self._entrypoint(name, block)
        limits = read_limits(self.src, table, block, self.limits)
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
                f"is {show(value)}; allowed: an array of globs relative to supabase/",
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
                    f"has {show(pattern)}, which is outside supabase/",
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
                f"is {show(value)}; allowed: a path relative to supabase/, e.g. {example}",
            )
        path = (self.supabase_dir / value).resolve()
        if not path.is_relative_to(self.supabase_dir.resolve()):
            raise self.src.error(
                ("functions", name),
                "entrypoint",
                f"is {show(value)}, which is outside supabase/",
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


def inspected(function: FunctionConfig) -> FunctionConfig:
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


def select_functions(
    found: Discovery, only: tuple[str, ...]
) -> tuple[dict[str, FunctionConfig], tuple[str, ...]]:
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
