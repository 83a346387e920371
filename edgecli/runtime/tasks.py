"""Background tasks registered with `EdgeRuntime.wait_until`: scheduled, tagged, reported, cancelled.

Every task gets a stable id, runs with that id in its context (so its prints are tagged), and is
reported as `task_start` then exactly one `task_end` (completed, failed or cancelled with a reason).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edgecli.runtime import report


@dataclass
class TaskInfo:
    id: str
    name: str
    request: str | None
    started: float
    cancel_reason: str | None = None


def _task_name(awaitable: Awaitable[Any]) -> str:
    return getattr(awaitable, "__qualname__", None) or type(awaitable).__name__


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class TaskTracker:
    def __init__(self) -> None:
        self.prefix = "t"
        self.pending: dict[asyncio.Task[Any], TaskInfo] = {}
        self._ids = itertools.count(1)
        # Set by the worker: what to do when a task raised (dispatch `unhandledrejection`).
        self.on_failure: Callable[[BaseException, asyncio.Task[Any]], None] | None = None

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "EdgeRuntime.wait_until() needs a running event loop: call it from a handler, an async "
                "function, or module level in a function served by edgecli."
            ) from None
        coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
        info = TaskInfo(
            id=f"{self.prefix}-{next(self._ids)}",
            name=_task_name(awaitable),
            request=report.current_request.get(),
            started=time.time(),
        )
        ctx = contextvars.copy_context()
        ctx.run(report.current_task.set, info.id)
        report.reporter.emit(
            "task_start", f"task {info.name} started", request=info.request, task=info.id, name=info.name
        )
        task = loop.create_task(coro, context=ctx)
        self.pending[task] = info
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        info = self.pending.pop(task)
        duration_ms = round((time.time() - info.started) * 1000, 3)
        error = None
        exc: BaseException | None = None
        if task.cancelled():
            status, level = "cancelled", "warning"
            reason = info.cancel_reason or "cancelled"
            message = f"task {info.name} cancelled ({reason})"
        else:
            exc = task.exception()  # also marks it retrieved: no "never retrieved" noise
            reason = None
            if exc is None:
                status, level, message = "completed", "info", f"task {info.name} completed"
            else:
                status, level = "failed", "error"
                error = format_exception(exc)
                message = f"task {info.name} failed: {type(exc).__name__}: {exc}"
        report.reporter.emit(
            "task_end",
            message,
            level,
            request=info.request,
            task=info.id,
            name=info.name,
            status=status,
            duration_ms=duration_ms,
            error=error,
            reason=reason,
        )
        if exc is not None and self.on_failure is not None:
            self.on_failure(exc, task)

    async def cancel_all(self, reason: str, wait: float = 1.0) -> None:
        """Cancel every pending task (their `finally` blocks run), waiting up to `wait` seconds."""
        tasks = list(self.pending)
        for task in tasks:
            self.pending[task].cancel_reason = reason
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)


tracker = TaskTracker()
