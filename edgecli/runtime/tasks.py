"""Background tasks registered with `EdgeRuntime.wait_until`: scheduled, tagged, reported, cancelled.

Every task gets a stable id, runs with that id in its context (so its prints are tagged), and is
reported as `task_start` then exactly one `task_end` (completed, failed or cancelled with a reason).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edgecli import events
from edgecli.events import Level
from edgecli.runtime import report
from edgecli.runtime.tracebacks import format_exception


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


SPAWN_WAIT_S = 10.0  # for the loop to take a task handed over from a thread (it is never blocked that long)
Judge = Callable[[BaseException, "asyncio.Task[Any]"], Awaitable[bool]]


class TaskTracker:
    def __init__(self) -> None:
        self.prefix = "t"
        self.pending: dict[asyncio.Task[Any], TaskInfo] = {}
        self._ids = itertools.count(1)
        # Set by the worker: what to do when a task raised (dispatch `unhandledrejection`); True when a
        # listener handled it.
        self.on_failure: Judge | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, for a spawn from a thread

    def spawn(self, awaitable: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._spawn_from_thread(awaitable, name)
        coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
        info = TaskInfo(
            id=f"{self.prefix}-{next(self._ids)}",
            name=name or _task_name(awaitable),
            request=report.current_request.get(),
            started=time.time(),
        )
        ctx = contextvars.copy_context()
        ctx.run(report.current_task.set, info.id)
        reporter = report.reporter
        reporter.send(events.task_start(info.name, **reporter.context(request=info.request, task=info.id)))
        task = loop.create_task(coro, context=ctx)
        self.pending[task] = info
        # In the task's own context: what runs after it (its listeners) is tagged with the task.
        task.add_done_callback(self._done, context=ctx)
        return task

    def _spawn_from_thread(self, awaitable: Awaitable[Any], name: str | None) -> asyncio.Task[Any]:
        """A sync handler runs in a thread (loader.handler_app), where no loop runs: its task is made on
        the worker's loop, in the calling thread's context (the request it runs for), and returned."""
        loop = self.loop
        if loop is None or not loop.is_running():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never run: no "never awaited" warning on top of this error
            raise RuntimeError(
                "EdgeRuntime.wait_until() needs a running event loop: call it from a handler, an async "
                "function, or module level in a function served by edgecli."
            )
        made: concurrent.futures.Future[asyncio.Task[Any]] = concurrent.futures.Future()
        context = contextvars.copy_context()

        def spawn_there() -> None:
            try:
                made.set_result(context.run(self.spawn, awaitable, name))
            except BaseException as exc:
                made.set_exception(exc)

        loop.call_soon_threadsafe(spawn_there)
        return made.result(timeout=SPAWN_WAIT_S)

    def _done(self, task: asyncio.Task[Any]) -> None:
        info = self.pending.pop(task)
        duration_ms = round((time.time() - info.started) * 1000, 3)
        exc = None if task.cancelled() else task.exception()  # retrieved: no "never retrieved" noise
        if task.cancelled():
            reason = info.cancel_reason or "cancelled"
            message = f"task {info.name} cancelled ({reason})"
            self._end(info, duration_ms, "cancelled", message, "warning", reason=reason)
        elif exc is None:
            self._end(info, duration_ms, "completed", f"task {info.name} completed")
        elif self.on_failure is None:
            self._failed(info, duration_ms, exc, handled=False)
        else:
            # The `unhandledrejection` listeners say whether the failure was handled before its task_end
            # does; meanwhile the task still counts as pending, so a draining worker waits for them.
            judging = asyncio.ensure_future(self._judge(self.on_failure, exc, task, info, duration_ms))
            self.pending[judging] = info

    async def _judge(
        self,
        on_failure: Judge,
        exc: BaseException,
        task: asyncio.Task[Any],
        info: TaskInfo,
        duration_ms: float,
    ) -> None:
        handled = False
        try:
            handled = await on_failure(exc, task)
        finally:
            self._failed(info, duration_ms, exc, handled=handled)
            judging = asyncio.current_task()
            if judging is not None:
                self.pending.pop(judging, None)

    def _failed(self, info: TaskInfo, duration_ms: float, exc: BaseException, *, handled: bool) -> None:
        summary = f"{type(exc).__name__}: {exc}"
        if handled:  # a listener called prevent_default(): one line, no traceback
            message = f"task {info.name} failed: {summary} (handled by an unhandledrejection listener)"
            self._end(info, duration_ms, "failed", message, "warning", error=summary)
        else:
            message = f"task {info.name} failed: {summary}"
            self._end(info, duration_ms, "failed", message, "error", error=format_exception(exc))

    def _end(
        self,
        info: TaskInfo,
        duration_ms: float,
        status: str,
        message: str,
        level: Level | None = None,
        *,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        reporter = report.reporter
        context = reporter.context(request=info.request, task=info.id)
        event = events.task_end(info.name, status, duration_ms, error, reason, message, level, **context)
        reporter.send(event)

    async def cancel_all(self, reason: str, wait: float = 1.0) -> None:
        """Cancel every pending task (their `finally` blocks run), waiting up to `wait` seconds."""
        tasks = list(self.pending)
        for task in tasks:
            self.pending[task].cancel_reason = reason
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)


tracker = TaskTracker()
