"""How a worker reports: which request/task the running code belongs to, and events sent to the host.

Context variables carry the request id and task id, so a `print()` in a handler, in a sync handler's
thread, or in a background task is tagged with what it belongs to, with no help from user code.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from edgecli import events
from edgecli.events import Context, Event, Level
from edgecli.log_limits import truncate

current_request: ContextVar[str | None] = ContextVar("edgecli_request", default=None)
current_task: ContextVar[str | None] = ContextVar("edgecli_task", default=None)


class Reporter:
    """Sends this worker's events to the host, made by the constructors of edgecli/events.py with the
    worker's context (see docs/architecture.md, "Event records")."""

    def __init__(self, function: str | None, worker: str | None, send: Callable[[Event], None]):
        self.function = function
        self.worker = worker
        self.send = send

    def context(self, *, request: str | None = None, task: str | None = None) -> Context:
        """Who an event is about: this worker, and the request or task given."""
        return {"function": self.function, "worker": self.worker, "request": request, "task": task}

    def current(self) -> Context:
        """This worker, and the request and task the calling code runs for."""
        return self.context(request=current_request.get(), task=current_task.get())

    def log(self, message: str, level: Level = "info") -> None:
        """A log line tagged with the request/task the calling code runs for."""
        self.send(events.log(truncate(message), level, **self.current()))


def _print_record(event: Event) -> None:
    # Outside a worker (a function imported by a plain script or a test) events go nowhere special.
    pass


# Replaced by the worker at boot; a no-op outside one so the function API works in plain Python too.
reporter = Reporter(None, None, _print_record)
