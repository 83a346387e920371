"""`invoke --wait`: follow one request's events in the store until its background tasks have settled.

"Settled" (the runtime's ordering makes this sound): the request's own `request` summary event is stored
— every task the handler registered has its task_start stored before it — and every task_start has its
task_end (a nested task starts before its parent ends, so it is known before the parent settles).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgecli.console import Output, print_summary
from edgecli.events import Event
from edgecli.printer import EventPrinter
from edgecli.store.reader import EventQuery, EventReader

POLL_S = 0.1
# A request that never reached a worker (404, 401...) has no events; past this, stop waiting for them.
NO_EVENTS_GRACE_S = 2.0
_OUTCOMES = (
    ("completed", "completed", "good"),
    ("failed", "failed", "bad"),
    ("cancelled", "cancelled", "warn"),
    ("running", "still running", "warn"),
)


@dataclass
class Settlement:
    request_seen: bool = False
    started: dict[str, str] = field(default_factory=dict)  # task id -> name
    outcomes: dict[str, str] = field(default_factory=dict)  # task id -> completed | failed | cancelled
    timed_out: bool = False

    def see(self, event: Event) -> None:
        if event.kind == "request":
            self.request_seen = True
        elif event.kind == "task_start" and event.task:
            self.started[event.task] = str(event.fields.get("name") or "?")
        elif event.kind == "task_end" and event.task:
            self.started.setdefault(event.task, str(event.fields.get("name") or "?"))
            self.outcomes[event.task] = str(event.fields.get("status") or "failed")

    @property
    def running(self) -> int:
        return len(self.started) - len(self.outcomes)

    def settled(self, waited: float) -> bool:
        seen = self.request_seen or bool(self.started) or waited >= NO_EVENTS_GRACE_S
        return seen and self.running == 0

    @property
    def ok(self) -> bool:
        # A cancelled task did not do its work either: as for a failed one, the command fails.
        return not self.timed_out and not {"failed", "cancelled"} & set(self.outcomes.values())

    def counts(self) -> Counter[str]:
        counts = Counter(self.outcomes.values())
        counts["running"] = self.running
        return counts


def follow_request(
    path: Path, request_id: str, timeout: float, output: Output, json_output: bool
) -> Settlement:
    """Print the request's events as they are stored, then a one-line summary. Waits at most `timeout`."""
    state = Settlement()
    printer = EventPrinter(output, json_output=json_output)
    started = time.monotonic()
    last = 0
    with EventReader(path) as reader:
        while True:
            top = reader.last_id()
            query = EventQuery(request=request_id, or_tasks=tuple(state.started), exact_ids=True)
            for _, event in reader.between(query, last, top):
                state.see(event)
                printer.emit(event)
            last = top
            waited = time.monotonic() - started
            if state.settled(waited):
                break
            if waited >= timeout:
                state.timed_out = True
                break
            time.sleep(POLL_S)
    _print_summary(output, state, request_id, timeout, json_output)
    return state


def _print_summary(
    output: Output, state: Settlement, request_id: str, timeout: float, json_output: bool
) -> None:
    counts = state.counts()
    if json_output:
        record = {
            "summary": "tasks",
            "request": request_id,
            "tasks": len(state.started),
            **{status: counts[status] for status in ("completed", "failed", "cancelled", "running")},
            "settled": not state.timed_out,
        }
        output.record(record)
        return
    total = len(state.started)
    if total == 0 and not state.request_seen:
        print_summary(output, [(f"no events recorded for request {request_id}", "warn")])
        return
    segments: list[tuple[str, str]] = []
    if state.timed_out:
        segments.append((f"timed out after {timeout:g} s: ", "bad"))
    segments.append(
        (f"{total} task{'' if total == 1 else 's'}", "") if total else ("no background tasks", "")
    )
    parts = [(f"{counts[status]} {label}", tone) for status, label, tone in _OUTCOMES if counts[status]]
    for i, (text, tone) in enumerate(parts):
        segments += [(": " if i == 0 else ", ", ""), (text, tone)]
    print_summary(output, segments)
