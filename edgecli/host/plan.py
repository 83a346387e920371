"""From changed paths and a freshly read config to a reload plan: which functions to add, remove and
reload, and which settings only a restart applies. Pure functions, tested without a server.
See docs/architecture.md, "Hot reload".
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import watchfiles

from edgecli.config import FUNCTION_NAME_RE, Config, FunctionConfig
from edgecli.host.watch import Changes

READY_WAIT_S = 5.0  # a module that hangs at import must not hold up the next reload forever
LISTED_FILES = 3  # changed files named in the reload line (the event's `changes` field has more)
ALL = "*"  # owner_of(): the change concerns every function (not a valid function name, so no clash)


def owner_of(config: Config, path: Path) -> str | None:
    """The function a changed path belongs to; ALL for shared code and the common env; None for paths
    that concern no running function (config.toml itself: the config diff decides)."""
    if config.env_file is not None and path == config.env_file:
        return ALL
    for function in config.functions.values():
        if path == function.entrypoint or path.is_relative_to(function.directory):
            return function.name
        if owns_static(config, function, path):
            return function.name
    if path == config.functions_dir or not path.is_relative_to(config.functions_dir):
        return None
    top = path.relative_to(config.functions_dir).parts[0]
    if FUNCTION_NAME_RE.fullmatch(top):
        return None  # a folder that is not (or no longer) a served function: the config diff decides
    return ALL  # _shared/ and other `_` folders, functions/.env, modules at the top of functions/


def owns_static(config: Config, function: FunctionConfig, path: Path) -> bool:
    """Whether `path` is (or would be) one of `function`'s static files: a change there reloads it."""
    if not path.is_relative_to(config.supabase_dir) or path.is_relative_to(config.state_dir.parent):
        return False
    relative = path.relative_to(config.supabase_dir).as_posix()
    return any(fnmatch.fnmatch(relative, g.strip().removeprefix("./")) for g in function.static_globs)


def affected_by_files(config: Config, paths: Iterable[Path]) -> tuple[frozenset[str], bool]:
    """The functions whose files changed, and whether a change concerns every function."""
    owners = {owner_of(config, path) for path in paths}
    return frozenset(name for name in owners if name not in (None, ALL)), ALL in owners


# Settings a running serve cannot change: the socket is bound, keys and the store are set up at start.
_RESTART_ONLY: tuple[tuple[str, str, bool], ...] = (
    ("port", "[api] port", True),
    ("host", "the host", True),
    ("jwt_secret", "[auth] jwt_secret", False),  # never print a secret
    ("signing_keys", "[auth] signing_keys_path", False),
    ("event_retention", "[edge_runtime] event_retention", True),
    ("event_retention_mb", "[edge_runtime] event_retention_mb", True),
)


def restart_notes(old: Config, new: Config) -> tuple[str, ...]:
    notes = []
    for attr, shown, show_value in _RESTART_ONLY:
        before, after = getattr(old, attr), getattr(new, attr)
        if before != after:
            values = f" from {before} to {after}" if show_value else ""
            notes.append(
                f"supabase/config.toml: {shown} changed{values}; restart serve to apply it (serving goes on "
                "with the old value until then)."
            )
    return tuple(notes)


def shared_env_changed(old: Config, new: Config) -> bool:
    """Whether what every function's environment is built from changed (secrets, the common env file,
    the database URL: see docs/architecture.md, "A function's environment")."""
    return (dict(old.secrets), old.env_file, old.db_url) != (dict(new.secrets), new.env_file, new.db_url)


@dataclass(frozen=True)
class ReloadPlan:
    config: Config  # the config to run with from now on (restart-only values kept as they were)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    reloaded: tuple[str, ...] = ()
    new_pools: bool = False  # the policy changed: reloaded functions get a pool of the new kind
    restart: tuple[str, ...] = ()  # one line per setting only a restart applies

    @property
    def booting(self) -> tuple[str, ...]:
        return self.reloaded + self.added

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.reloaded)


def plan_reload(old: Config, new: Config, paths: Iterable[Path]) -> ReloadPlan:
    """What to do about `paths` having changed, given the running config and the one just loaded."""
    restart = restart_notes(old, new)
    new = replace(new, **{attr: getattr(old, attr) for attr, _, _ in _RESTART_ONLY})
    names, everything = affected_by_files(new, paths)
    everything = everything or new.policy != old.policy or shared_env_changed(old, new)
    reloaded = tuple(
        name
        for name, function in new.functions.items()
        if name in old.functions and (everything or name in names or function != old.functions[name])
    )
    return ReloadPlan(
        config=new,
        added=tuple(name for name in new.functions if name not in old.functions),
        removed=tuple(name for name in old.functions if name not in new.functions),
        reloaded=reloaded,
        new_pools=new.policy != old.policy,
        restart=restart,
    )


def forget_bytecode(paths: Iterable[Path]) -> None:
    """Delete the cached bytecode of changed modules. A .pyc is trusted when the source's mtime (whole
    seconds) and size match, so a same-size edit within the second of the previous one would otherwise
    boot the old code."""
    for path in paths:
        if path.suffix != ".py":
            continue
        for optimization in ("", 1, 2):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(str(path), optimization=optimization))


def lasting(changes: Changes) -> set[Path]:
    """The changed paths, without files that came and went within the batch (an editor's or sed's
    temporary file): they changed nothing, and would only clutter the reload line."""
    transient = {watchfiles.Change.added, watchfiles.Change.deleted}
    return {path for path, kinds in changes.items() if not (transient <= kinds and not path.exists())}


def shown_changes(paths: Iterable[Path], project_dir: Path) -> list[str]:
    """Changed paths relative to the project, without folders whose changed files are listed too."""
    paths = set(paths)
    parents = {parent for path in paths for parent in path.parents}
    return sorted(os.path.relpath(path, project_dir) for path in paths if path not in parents)


def describe(
    plan: ReloadPlan, changes: list[str], ready_ms: float | None, failed: list[str], slow: list[str]
) -> str:
    """The reload line: which functions, what happened to them, how fast, and which files changed."""
    parts = []
    if plan.reloaded:
        parts.append(f"reloaded {_names(plan.reloaded)}")
    if plan.added:
        parts.append(f"added {_names(plan.added)}")
    if plan.removed:
        parts.append(f"removed {_names(plan.removed)}")
    outcomes = []
    if ready_ms is not None and set(plan.booting) - set(failed) - set(slow):
        outcomes.append(f"new code ready in {ready_ms:.0f} ms")
    if failed:
        outcomes.append(f"{', '.join(failed)} failed to boot (503 BOOT_ERROR until the next change)")
    if slow:
        outcomes.append(f"{', '.join(slow)} still booting after {READY_WAIT_S:g} s")
    text = "; ".join(parts) + (f": {'; '.join(outcomes)}" if outcomes else "")
    shown = ", ".join(changes[:LISTED_FILES])
    more = len(changes) - LISTED_FILES
    return f"{text} (changed: {shown}{f' and {more} more' if more > 0 else ''})"


def _names(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{len(names)} functions ({', '.join(names)})"
