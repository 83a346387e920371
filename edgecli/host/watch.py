"""What hot reload watches, and the watchfiles iterators that watch it.

A filter drops what never matters (bytecode, editor droppings, `.git`, virtualenvs, the runtime state
under supabase/.temp); `Watcher` runs one watchfiles iterator per kind of watch (recursive for the
function folders, flat for supabase/ and the env file's folder), all feeding one queue of batches.
See docs/architecture.md, "Hot reload".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from edgecli import events
from edgecli.config import Config
from edgecli.events import Event

# watchfiles' own debounce groups changes by counting distinct (change, path) pairs, so saving one file
# over and over yields one batch per save; the reloader's quiet period is what merges a burst. The step
# only bounds how late a single save is noticed.
WATCH_STEP_MS = 10
WATCH_DEBOUNCE_MS = 200

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


def _links(folder: Path) -> frozenset[tuple[Path, Path]]:
    try:
        return frozenset((entry, entry.resolve()) for entry in folder.iterdir() if entry.is_symlink())
    except OSError:
        return frozenset()


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
            message = (
                f"cannot watch {shown} ({exc}); changes there are not picked up until the next reload "
                "or a restart of serve."
            )
            self.emit(events.log(message, "warning"))
