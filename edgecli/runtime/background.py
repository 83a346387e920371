"""Starlette's response background tasks (`BackgroundTask`, FastAPI's `BackgroundTasks`) as tracked tasks.

A response's background task runs after its last body message, inside the request's own handler: the
client has its answer, so it is background work like `EdgeRuntime.wait_until`'s, and is tracked the same
way (task_start/task_end named after the callable, listed by `edgecli tasks`, cut off under oneshot with
the same warning). Each still runs in turn after the one before, as Starlette runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask

from edgecli.runtime.tasks import tracker

_untracked: Callable[[BackgroundTask], Awaitable[None]] | None = None


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


async def _tracked_call(self: BackgroundTask) -> None:
    assert _untracked is not None
    task = tracker.spawn(_untracked(self), name=_name(self.func))
    # Waited for, not awaited: a failure is reported once, by the tracker, as any background task's is.
    await asyncio.wait([task])


def install() -> None:
    """Route every BackgroundTask through the tracker (once per worker process)."""
    global _untracked
    if _untracked is None:
        _untracked = BackgroundTask.__call__
        BackgroundTask.__call__ = _tracked_call  # type: ignore[method-assign]
