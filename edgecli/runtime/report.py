"""How a worker reports: which request/task the running code belongs to, and events sent to the host.

Context variables carry the request id and task id, so a `print()` in a handler, in a sync handler's
thread, or in a background task is tagged with what it belongs to, with no help from user code.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from edgecli.events import Event
from edgecli.log_limits import truncate

current_request: ContextVar[str | None] = ContextVar("edgecli_request", default=None)
current_task: ContextVar[str | None] = ContextVar("edgecli_task", default=None)


class Reporter:
    """Builds events (see docs/architecture.md, "Event records") for this worker and hands them to `send`."""

    def __init__(self, function: str | None, worker: str | None, send: Callable[[Event], None]):
        self.function = function
        self.worker = worker
        self._send = send

    def emit(self, kind: str, message: str = "", level: str = "info", **tags_and_fields: Any) -> None:
        """Send an event (`request=`, `task=` and the kind's fields as keywords, as `event` takes them)."""
        if kind == "log":
            message = truncate(message)
        self._send(self.event(kind, message, level, **tags_and_fields))

    def event(
        self,
        kind: str,
        message: str = "",
        level: str = "info",
        *,
        request: str | None = None,
        task: str | None = None,
        **fields: Any,
    ) -> Event:
        """An event of this worker's (a log message as given: capped already, see log_limits.py)."""
        return Event(
            kind=kind,
            message=message,
            level=level,
            function=self.function,
            worker=self.worker,
            request=request,
            task=task,
            fields=fields,
        )

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """A log line tagged with the request/task the calling code runs for."""
        self.emit("log", message, level, request=current_request.get(), task=current_task.get(), **fields)


def _print_record(event: Event) -> None:
    # Outside a worker (a function imported by a plain script or a test) events go nowhere special.
    pass


# Replaced by the worker at boot; a no-op outside one so the function API works in plain Python too.
reporter = Reporter(None, None, _print_record)
