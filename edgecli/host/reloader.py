"""Hot reload (DESIGN §6): watch the project, work out which functions a change touches, recycle only those.

The flow, one stage per section below:
1. watchfiles threads report raw changes; a filter drops what never matters (bytecode, editor droppings,
   `.git`, virtualenvs, the runtime state under supabase/.temp);
2. changes are gathered until the tree has been quiet for a moment, so a burst of saves is one reload;
3. config.toml is read again (with the same CLI overrides) and compared with the running config; together
   with the changed paths this gives a plan: functions added, removed and reloaded, and settings that only
   a restart can apply;
4. the plan is applied to the live pools dict the relay routes with: reloaded pools start a new
   generation (old workers drain within graceful_exit_timeout_sec), new pools are created, removed ones
   closed; the new workers are warmed and one `reload` event says what happened and how fast.
User code never stops serve: a boot error leaves the pool broken (503) until the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import importlib.util
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from edgecli.config import FUNCTION_NAME_RE, Config, FunctionConfig, load_config
from edgecli.errors import EdgecliError
from edgecli.events import Event
from edgecli.host.env import build_function_env
from edgecli.host.pool import make_pool

if TYPE_CHECKING:
    from edgecli.host.server import ServeCommand

# watchfiles' own debounce groups changes by counting distinct (change, path) pairs, so saving one file
# over and over yields one batch per save; the quiet period below is what merges a burst. The step only
# bounds how late a single save is noticed.
WATCH_STEP_MS = 10
WATCH_DEBOUNCE_MS = 200
QUIET_S = 0.05  # reload once no change came for this long...
MAX_DELAY_S = 2.0  # ...or this long after the first change, even if something keeps writing
READY_WAIT_S = 5.0  # a module that hangs at import must not hold up the next reload forever
LISTED_FILES = 3  # changed files named in the reload line (the event's `changes` field has more)
MAX_CHANGES = 100
ALL = "*"  # owner_of(): the change concerns every function (not a valid function name, so no clash)

# ---------------------------------------------------------------------------------------------------------
# 1. What is worth watching.

IGNORED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        ".idea",
        ".vscode",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
_IGNORED_NAME = re.compile(
    r"""
      \.py[cod]$ | \.sw[a-z]$ | ~$ | \.tmp$ | \.bak$     # bytecode, vim swap files, backups, temp files
    | ^\.\# | ^\#.*\#$ | ^4913$                          # emacs lock and autosave files, vim's write probe
    | ___jb_(tmp|old)___$ | ^\.DS_Store$                 # JetBrains' safe write, macOS folder metadata
    """,
    re.VERBOSE,
)


def is_ignored(relative: Path) -> bool:
    """Whether a path (relative to a watched folder) is noise: checked on the relative part only, so a
    project that itself lives under, say, a `venv` folder is still watched."""
    parts = relative.parts
    return any(part in IGNORED_DIRS for part in parts) or bool(parts and _IGNORED_NAME.search(parts[-1]))


@dataclass(frozen=True)
class WatchSet:
    """The folders to watch: watchfiles' `recursive` flag is per watcher, hence two lists."""

    recursive: tuple[Path, ...]  # supabase/functions (+ function folders living elsewhere)
    flat: tuple[Path, ...]  # supabase/ for config.toml, and the --env-file's folder
    files: frozenset[Path]  # single files that matter inside the flat folders
    # Symlinked folders and their targets: a link added after the watch started is not followed by the
    # running watcher, so a different set of links means restarting it.
    links: frozenset[tuple[Path, Path]] = frozenset()

    def is_relevant(self, path: Path) -> bool:
        if path in self.files:
            return True
        for root in self.recursive:
            if path == root:
                return True  # the folder itself appeared or vanished: the watch must be renewed
            if path.is_relative_to(root):
                return not is_ignored(path.relative_to(root))
        return False

    def watch_filter(self, change: watchfiles.Change, path: str) -> bool:
        return self.is_relevant(Path(path))


def watch_set(config: Config) -> WatchSet:
    roots = [config.functions_dir]
    for function in config.functions.values():
        directory = function.directory
        outside = not directory.is_relative_to(config.functions_dir) and directory != config.supabase_dir
        if outside and directory not in roots:
            roots.append(directory)
    files = {config.config_file, config.functions_dir}
    flat = [config.supabase_dir]
    for root in static_roots(config):  # static_files kept outside functions/ (e.g. supabase/static/)
        if root == config.supabase_dir:
            files.update(f for function in config.functions.values() for f in function.static_files)
        elif not any(root.is_relative_to(r) for r in roots):
            roots.append(root)
    if config.env_file is not None:
        files.add(config.env_file)
        if (
            not any(config.env_file.is_relative_to(root) for root in roots)
            and config.env_file.parent not in flat
        ):
            flat.append(config.env_file.parent)
    return WatchSet(
        recursive=tuple(root for root in roots if root.is_dir()),
        flat=tuple(flat),
        files=frozenset(files),
        links=_links(config.functions_dir),
    )


def static_roots(config: Config) -> set[Path]:
    """The folder each `static_files` glob starts in (its part before the first wildcard)."""
    found = set()
    for function in config.functions.values():
        for pattern in function.static_globs:
            fixed = []
            for part in Path(pattern.strip().removeprefix("./")).parts[:-1]:
                if any(c in part for c in "*?["):
                    break
                fixed.append(part)
            found.add(config.supabase_dir.joinpath(*fixed))
    return found


def owns_static(config: Config, function: FunctionConfig, path: Path) -> bool:
    """Whether `path` is (or would be) one of `function`'s static files: a change there reloads it."""
    if not path.is_relative_to(config.supabase_dir) or path.is_relative_to(config.state_dir.parent):
        return False
    relative = path.relative_to(config.supabase_dir).as_posix()
    return any(fnmatch.fnmatch(relative, g.strip().removeprefix("./")) for g in function.static_globs)


def _links(folder: Path) -> frozenset[tuple[Path, Path]]:
    try:
        return frozenset((entry, entry.resolve()) for entry in folder.iterdir() if entry.is_symlink())
    except OSError:
        return frozenset()


# ---------------------------------------------------------------------------------------------------------
# 2. From changed paths and a new config to a plan.


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
    """Whether what every function's environment is built from changed (DESIGN §2's layers)."""
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


# ---------------------------------------------------------------------------------------------------------
# 3. Watching: one watchfiles iterator per kind of watch, all feeding one queue.

Changes = dict[Path, set[watchfiles.Change]]
Batch = tuple[float, Changes]  # (loop time the batch arrived, what happened to which path)
Emit = Callable[[Event], None]


class Watcher:
    """Runs watchfiles over a WatchSet until stopped; restarted whenever the set to watch changes."""

    def __init__(self, queue: asyncio.Queue[Batch], emit: Emit) -> None:
        self.queue = queue
        self.emit = emit
        self.current: WatchSet | None = None
        self._stop = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []

    def start(self, watch: WatchSet) -> None:
        self.current = watch
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for roots, recursive in ((watch.recursive, True), (watch.flat, False)):
            if roots:
                self._pumps.append(loop.create_task(self._pump(watch, roots, recursive, self._stop)))

    async def stop(self) -> None:
        self._stop.set()  # watchfiles' thread sees it within one step and returns
        pumps, self._pumps = self._pumps, []
        if pumps:
            await asyncio.wait(pumps)

    def stale(self, watch: WatchSet, paths: Iterable[Path]) -> bool:
        """Whether the running watch misses something: other folders or links, a watched folder that was
        deleted or re-created (its inotify watch is gone), or a watcher that stopped on an error."""
        if watch != self.current or any(pump.done() for pump in self._pumps):
            return True
        return any(path in watch.recursive for path in paths)

    async def _pump(
        self, watch: WatchSet, roots: tuple[Path, ...], recursive: bool, stop: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for changes in watchfiles.awatch(
                *roots,
                watch_filter=watch.watch_filter,
                step=WATCH_STEP_MS,
                debounce=WATCH_DEBOUNCE_MS,
                stop_event=stop,
                recursive=recursive,
                ignore_permission_denied=True,
            ):
                batch: Changes = {}
                for change, path in changes:
                    batch.setdefault(Path(path), set()).add(change)
                self.queue.put_nowait((loop.time(), batch))
        except Exception as exc:  # a folder vanished under the watcher, inotify limits...: keep serving
            shown = ", ".join(str(root) for root in roots)
            self.emit(
                Event(
                    kind="log",
                    level="warning",
                    message=f"cannot watch {shown} ({exc}); changes there are not picked up until the "
                    "next reload or a restart of serve.",
                )
            )


# ---------------------------------------------------------------------------------------------------------
# 4. The reloader: gathers changes, plans, applies to the running serve.


class Reloader:
    """Owned by ServeCommand: `start()` after the pools exist, `await stop()` first thing at shutdown."""

    def __init__(self, serve: ServeCommand) -> None:
        self.serve = serve
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.watcher = Watcher(self.queue, self.emit)
        # The notes last shown per function (None: config-level), so that a reload prints only new ones.
        self.notes = self.current_notes(serve.config, tuple(serve.config.functions))
        self.config_error: str | None = None
        self.restart_notes: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        self.serve.hub.emit(event)

    def start(self) -> None:
        self.watcher.start(watch_set(self.serve.config))
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        await self.watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while True:
            started, paths = await self.collect()
            if not paths:
                continue
            try:
                await self.reload(paths, started)
            except Exception as exc:  # a bug of ours must not end hot reload, let alone serve
                self.emit(Event(kind="log", level="error", message=f"reload failed: {exc!r}"))

    async def collect(self) -> tuple[float, set[Path]]:
        """Wait for a change, then take more until QUIET_S pass without one (or MAX_DELAY_S in all)."""
        loop = asyncio.get_running_loop()
        first, changes = await self.queue.get()
        while (left := min(QUIET_S, first + MAX_DELAY_S - loop.time())) > 0:
            try:
                _, more = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            for path, kinds in more.items():
                changes.setdefault(path, set()).update(kinds)
        return first, lasting(changes)

    async def reload(self, paths: set[Path], started: float) -> None:
        old = self.serve.config
        plan = plan_reload(old, self.load(old, paths), paths)
        for note in sorted(set(plan.restart) - self.restart_notes):  # once, not on every later reload
            self.emit(Event(kind="log", level="warning", message=note))
        self.restart_notes = set(plan.restart)
        self.show_notes(plan)
        forget_bytecode(paths)
        watch = watch_set(plan.config)
        if self.watcher.stale(watch, paths):
            await self.watcher.stop()
            self.watcher.start(watch)
        self.adopt(plan.config)
        changes = shown_changes(paths, old.project_dir)
        if plan.empty:
            shown = ", ".join(changes[:LISTED_FILES])
            self.emit(Event(kind="log", level="debug", message=f"changed {shown}: no function affected"))
            return
        self.apply(plan)
        ready_ms, failed, slow = await self.ready(plan.booting, started)
        self.emit(
            Event(
                kind="reload",
                level="warning" if failed or slow else "info",
                function=plan.booting[0] if len(plan.booting) == 1 and not plan.removed else None,
                message=describe(plan, changes, ready_ms, failed, slow),
                fields={"changes": changes[:MAX_CHANGES]},
            )
        )
        self.announce(plan)

    def load(self, old: Config, paths: set[Path]) -> Config:
        """config.toml read again with serve's own overrides; on an error, the running config."""
        try:
            config = load_config(old.project_dir, self.serve.overrides)
        except EdgecliError as exc:
            message = str(exc)
            if message != self.config_error or old.config_file in paths:
                self.emit(
                    Event(
                        kind="log",
                        level="error",
                        message=f"{message} Serving goes on with the previous configuration until it is "
                        "fixed.",
                    )
                )
            self.config_error = message
            return old
        self.config_error = None
        return config

    def adopt(self, config: Config) -> None:
        # Workers' environments are built from these (env_for reads serve.config): keep both in step.
        self.serve.config = config
        self.serve.supervisor.config = config

    def apply(self, plan: ReloadPlan) -> None:
        config, pools, supervisor = plan.config, self.serve.pools, self.serve.supervisor
        for name in plan.removed:
            pools.pop(name).close()  # its workers drain, then leave
        for name in plan.reloaded:
            function = config.functions[name]
            pool = pools.get(name)
            if pool is not None and not plan.new_pools:
                pool.reload(function)
                continue
            # A new pool is in the dict before the old one is retired: requests never see a gap.
            pools[name] = make_pool(config.policy, function, supervisor)
            if pool is not None:
                pool.close()
        for name in plan.added:
            pools[name] = make_pool(config.policy, config.functions[name], supervisor)

    async def ready(
        self, names: tuple[str, ...], started: float
    ) -> tuple[float | None, list[str], list[str]]:
        """Warm the new workers; (ms from the first change until they were ready, failed, still booting)."""
        loop = asyncio.get_running_loop()
        pools = [self.serve.pools[name] for name in names]
        if not pools:
            return None, [], []
        warming = asyncio.ensure_future(
            asyncio.gather(*(pool.warm() for pool in pools), return_exceptions=True)
        )
        await asyncio.wait([warming], timeout=READY_WAIT_S)
        ready_ms = (loop.time() - started) * 1000
        failed = [pool.name for pool in pools if pool.broken is not None]
        slow = [] if warming.done() else [pool.name for pool in pools if pool.booting]
        return ready_ms, failed, slow

    def announce(self, plan: ReloadPlan) -> None:
        """A line per function that appeared (its URL) or went away (and why), after the reload line."""
        config = plan.config
        for name in plan.added:
            url = f"{config.base_url}/functions/v1/{name}"
            self.emit(Event(kind="log", function=name, message=f"new function {name}: {url}"))
        for name in plan.removed:
            reason = next(
                (note.split(": ", 1)[1] for note in config.skipped if note.startswith(f"{name}: ")),
                "its folder or entrypoint is gone",
            )
            self.emit(
                Event(
                    kind="log",
                    function=name,
                    message=f"{name} is no longer served: {reason}. Requests to it get 404.",
                )
            )

    # -- notes: config warnings, skipped folders, env file problems --------------------------------------

    def current_notes(self, config: Config, names: Iterable[str]) -> dict[str | None, set[str]]:
        notes: dict[str | None, set[str]] = {None: {*config.warnings, *config.skipped}}
        for name in names:
            notes[name] = set(build_function_env(config, config.functions[name]).warnings)
        return notes

    def show_notes(self, plan: ReloadPlan) -> None:
        # Why a removed function went away is said by announce(); not twice.
        gone = tuple(f"{name}: " for name in plan.removed)
        for key, notes in self.current_notes(plan.config, plan.booting).items():
            for note in sorted(notes - self.notes.get(key, set())):
                if not note.startswith(gone) or key is not None:
                    self.emit(Event(kind="log", level="warning", function=key, message=note))
            self.notes[key] = notes
