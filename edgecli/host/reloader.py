"""Hot reload: watch → plan → `registry.apply(plan)`, and a `reload` event saying what happened.

1. edgecli/host/watch.py reports raw changes, noise filtered out;
2. changes are gathered until the tree has been quiet for a moment, so a burst of saves is one reload;
3. config.toml is read again (with the same CLI overrides) and edgecli/host/plan.py works out which
   functions were added, removed or touched, and which settings only a restart can apply;
4. the registry applies the plan: reloaded pools start a new generation (old workers finish their
   requests, then drain within graceful_exit_timeout_sec), new pools are created, removed ones closed;
   the new workers are warmed and one `reload` event says what happened and how fast.
User code never stops serve: a boot error leaves the pool broken (503) until the next change.
See docs/architecture.md, "Hot reload".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path

from edgecli import events
from edgecli.config import Config, Overrides, load_config
from edgecli.errors import EdgecliError
from edgecli.host.env import build_function_env
from edgecli.host.plan import (
    LISTED_FILES,
    READY_WAIT_S,
    ReloadPlan,
    describe,
    forget_bytecode,
    lasting,
    plan_reload,
    shown_changes,
)
from edgecli.host.registry import Registry
from edgecli.host.watch import Batch, Emit, Watcher, watch_set

QUIET_S = 0.05  # reload once no change came for this long...
MAX_DELAY_S = 2.0  # ...or this long after the first change, even if something keeps writing
MAX_CHANGES = 100


class Reloader:
    """Owned by ServeCommand: `start()` after the pools exist, `await stop()` first thing at shutdown."""

    def __init__(self, registry: Registry, overrides: Overrides, emit: Emit) -> None:
        self.registry = registry
        self.overrides = overrides  # config.toml is read again with serve's own CLI overrides
        self.emit = emit
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.watcher = Watcher(self.queue, self.emit)
        # The notes last shown per function (None: config-level), so that a reload prints only new ones.
        config = registry.config
        self.notes = self.current_notes(config, tuple(config.functions))
        self.config_error: str | None = None
        self.restart_notes: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.watcher.start(watch_set(self.registry.config))
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
                self.emit(events.log(f"reload failed: {exc!r}", "error"))

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
        old = self.registry.config
        plan = plan_reload(old, self.load(old, paths), paths)
        for note in sorted(set(plan.restart) - self.restart_notes):  # once, not on every later reload
            self.emit(events.log(note, "warning"))
        self.restart_notes = set(plan.restart)
        self.show_notes(plan)
        forget_bytecode(paths)
        watch = watch_set(plan.config)
        if self.watcher.stale(watch, paths):
            await self.watcher.stop()
            self.watcher.start(watch)
        self.registry.apply(plan)
        changes = shown_changes(paths, old.project_dir)
        if plan.empty:
            shown = ", ".join(changes[:LISTED_FILES])
            self.emit(events.log(f"changed {shown}: no function affected", "debug"))
            return
        ready_ms, failed, slow = await self.ready(plan.booting, started)
        self.emit(
            events.reload(
                changes[:MAX_CHANGES],
                describe(plan, changes, ready_ms, failed, slow),
                "warning" if failed or slow else "info",
                function=plan.booting[0] if len(plan.booting) == 1 and not plan.removed else None,
            )
        )
        self.announce(plan)

    def load(self, old: Config, paths: set[Path]) -> Config:
        """config.toml read again with serve's own overrides; on an error, the running config."""
        try:
            config = load_config(old.project_dir, self.overrides)
        except EdgecliError as exc:
            message = str(exc)
            if message != self.config_error or old.config_file in paths:
                self.emit(
                    events.log(
                        f"{message} Serving goes on with the previous configuration until it is fixed.",
                        "error",
                    )
                )
            self.config_error = message
            return old
        self.config_error = None
        return config

    async def ready(
        self, names: tuple[str, ...], started: float
    ) -> tuple[float | None, list[str], list[str]]:
        """Warm the new workers; (ms from the first change until they were ready, failed, still booting)."""
        loop = asyncio.get_running_loop()
        pools = [self.registry.pools[name] for name in names]
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
            self.emit(events.log(f"new function {name}: {url}", function=name))
        for name in plan.removed:
            reason = next(
                (note.split(": ", 1)[1] for note in config.skipped if note.startswith(f"{name}: ")),
                "its folder or entrypoint is gone",
            )
            message = f"{name} is no longer served: {reason}. Requests to it get 404."
            self.emit(events.log(message, function=name))

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
                    self.emit(events.log(note, "warning", function=key))
            self.notes[key] = notes
