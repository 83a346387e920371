"""Import a function's entrypoint and turn what it serves into one ASGI app.

A module may call `serve(handler_or_app)`, or define `app` (ASGI) or `handler`. Anything else is a boot
error with a message saying what to add.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from edgecli.runtime.api import served
from edgecli.runtime.tracebacks import UserMistake

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BootFailure(Exception):
    """The function cannot be served (no handler, not callable); the message says how to fix it."""


class NotAResponse(UserMistake):
    """A handler returned something that is not a Starlette Response."""


def import_entrypoint(entrypoint: Path) -> Any:
    spec = importlib.util.spec_from_file_location("index", entrypoint)
    if spec is None or spec.loader is None:
        raise BootFailure(f"{entrypoint.name} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["index"] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        if "codec can't decode" in str(exc.msg) or "Non-UTF-8 code" in str(exc.msg):
            raise BootFailure(
                f"{entrypoint} is not valid UTF-8 (line {exc.lineno}: {exc.msg}); save it as UTF-8, or "
                "declare its encoding on its first line (# -*- coding: latin-1 -*-)"
            ) from None
        raise
    except IsADirectoryError:
        raise BootFailure(f"{entrypoint} is a directory; the entrypoint must be a Python file") from None
    return module


def resolve_app(module: Any, entrypoint: Path) -> tuple[ASGIApp, bool]:
    """The ASGI app to serve, and whether the module gave a real ASGI app (which may want lifespan)."""
    target = served.target
    if target is None:
        target = getattr(module, "app", None) or getattr(module, "handler", None)
    if target is None:
        raise BootFailure(
            f"{entrypoint.name} serves nothing: call serve(handler) at module level, or define an ASGI "
            "`app` or an `async def handler(req)`."
        )
    if not callable(target):
        raise BootFailure(f"what {entrypoint.name} serves is a {type(target).__name__}, not callable")
    return (target, True) if _is_asgi(target) else (handler_app(target), False)


def _positional_arity(fn: Any) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in sig.parameters.values() if p.kind in kinds)


def _is_asgi(target: Any) -> bool:
    """ASGI apps take (scope, receive, send); handlers take one request."""
    return _positional_arity(target) == 3


def _where(handler: Any) -> str:
    """`handle() in index.py line 4`: the user's function, named with where it is defined."""
    name = getattr(handler, "__qualname__", type(handler).__name__) + "()"
    call = getattr(handler, "__call__", None)  # noqa: B004 - a callable object's method
    code = getattr(handler, "__code__", None) or getattr(call, "__code__", None)
    if code is None:
        return name
    return f"{name} in {Path(code.co_filename).name} line {code.co_firstlineno}"


def handler_app(handler: Callable[[Request], Any]) -> ASGIApp:
    """Wrap `handler(Request) -> Response` as ASGI; sync handlers run in a thread, not on the loop."""
    call = getattr(handler, "__call__", handler)  # noqa: B004 - a callable object's coroutine __call__
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive, send)
        if is_async:
            response = await handler(request)
        else:
            response = await asyncio.to_thread(handler, request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, Response):
            raise NotAResponse(
                f"{_where(handler)} returned {type(response).__name__}, not a Response: return e.g. "
                "JSONResponse({...}) or Response(text) from starlette.responses"
            )
        await response(scope, receive, send)

    return app


class Lifespan:
    """Runs an ASGI app's lifespan startup at boot and shutdown at exit, when the app supports it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.supported = False

    async def startup(self, timeout: float = 30.0) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await asyncio.wait_for(self._outbox.get(), timeout)
        if reply["type"] == "lifespan.startup.failed":
            raise BootFailure(f"lifespan startup failed: {reply.get('message', '')}")
        self.supported = reply["type"] == "lifespan.startup.complete"

    async def shutdown(self, timeout: float = 5.0) -> None:
        if not self.supported:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._outbox.get(), timeout)
        except TimeoutError:
            pass

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception:
            pass  # an app without lifespan support raises on the lifespan scope: that is fine
        finally:
            await self._outbox.put({"type": "lifespan.unsupported"})

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        await self._outbox.put(dict(message))
