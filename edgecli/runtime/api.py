"""The function API: `EdgeRuntime.wait_until`, event listeners, and `serve`.

This is what user code imports. It holds no machinery of its own: background tasks go to the worker's
`TaskTracker`, listeners are dispatched by the worker when the host says the worker is going away.
Outside a worker (a plain script, a unit test of a function) it still works: tasks are scheduled on the
running loop and listeners are only recorded.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from edgecli.runtime.tasks import tracker

EVENT_NAMES = ("beforeunload", "unhandledrejection")
Listener = Callable[[Any], Any]


class BeforeUnloadEvent:
    """Fired once before a worker goes away; `detail["reason"]` says why."""

    type = "beforeunload"

    def __init__(self, reason: str) -> None:
        self.detail = {"reason": reason}


class UnhandledRejectionEvent:
    """A background task raised. `prevent_default()` marks it handled (no error log, no retirement)."""

    type = "unhandledrejection"

    def __init__(self, reason: BaseException, task: asyncio.Task[Any] | None) -> None:
        self.reason = reason
        self.task = task
        self.default_prevented = False

    def prevent_default(self) -> None:
        self.default_prevented = True

    preventDefault = prevent_default


class _Listeners:
    def __init__(self) -> None:
        self.by_name: dict[str, list[Listener]] = {name: [] for name in EVENT_NAMES}

    def add(self, name: str, fn: Listener) -> None:
        if name not in self.by_name:
            known = ", ".join(EVENT_NAMES)
            raise ValueError(f"EdgeRuntime has no event {name!r}; the events are: {known}.")
        if not callable(fn):
            raise TypeError(f"an event listener must be callable, got {type(fn).__name__}")
        if fn not in self.by_name[name]:
            self.by_name[name].append(fn)

    def remove(self, name: str, fn: Listener) -> None:
        if fn in self.by_name.get(name, []):
            self.by_name[name].remove(fn)

    async def dispatch(self, name: str, event: Any, on_error: Callable[[BaseException], None]) -> None:
        """Call every listener in order; async ones are awaited. A failing listener does not stop the rest."""
        for fn in list(self.by_name[name]):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                on_error(exc)


listeners = _Listeners()


class EdgeRuntime:
    """The `EdgeRuntime` global of Supabase's edge runtime, for Python."""

    @staticmethod
    def wait_until(awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `awaitable` in the background after the response; returns the scheduled task."""
        if not inspect.isawaitable(awaitable):
            raise TypeError(
                "EdgeRuntime.wait_until() takes an awaitable, such as a coroutine: call the async function "
                f"and pass what it returns, e.g. wait_until(notify(name)), not {type(awaitable).__name__}."
            )
        return tracker.spawn(awaitable)

    waitUntil = wait_until

    @staticmethod
    def on(name: str) -> Callable[[Listener], Listener]:
        """Decorator: `@EdgeRuntime.on("beforeunload")`."""

        def register(fn: Listener) -> Listener:
            listeners.add(name, fn)
            return fn

        return register

    @staticmethod
    def add_event_listener(name: str, fn: Listener) -> None:
        listeners.add(name, fn)

    addEventListener = add_event_listener

    @staticmethod
    def remove_event_listener(name: str, fn: Listener) -> None:
        listeners.remove(name, fn)


class _Served:
    target: Any = None


served = _Served()


def serve(target: Any) -> None:
    """Serve `target`: an async or sync `handler(Request) -> Response`, or any ASGI app."""
    if not callable(target):
        raise TypeError(
            f"serve() takes a handler function or an ASGI app, got {type(target).__name__}: "
            "pass e.g. serve(handler) with `async def handler(req): ...`."
        )
    served.target = target
