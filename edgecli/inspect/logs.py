"""`edgecli logs`: print events from the store, newest N last, optionally following new ones until Ctrl-C."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edgecli import listening
from edgecli.config import ENV_STATE_DIR, Config
from edgecli.console import Output
from edgecli.errors import UsageError
from edgecli.events import LEVELS
from edgecli.printer import EventPrinter
from edgecli.project import find_project
from edgecli.store.reader import EventQuery, EventReader, NoStoreError, StoredEvent

FOLLOW_POLL_S = 0.2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class LogsArgs:
    follow: bool = False
    function: str | None = None
    request: str | None = None
    task: str | None = None
    level: str | None = None
    since: str | None = None
    lines: int = 100
    json_output: bool = False


def store_path(workdir: Path | None) -> Path:
    """The project's event store: in EDGECLI_STATE_DIR when that is set, as serve reads it (the pytest
    plugin's servers keep theirs there). Only the project root is needed: a broken config.toml must not
    hide the logs that may explain it."""
    root = os.environ.get(ENV_STATE_DIR)
    state_root = Path(root).resolve() if root else None
    return Config(project_dir=find_project(workdir), state_root=state_root).events_db


def parse_level(level: str | None) -> str | None:
    if level is None:
        return None
    normal = level.strip().lower()
    normal = {"warn": "warning", "err": "error"}.get(normal, normal)
    if normal not in LEVELS:
        raise UsageError(f"--level {level!r} is not a level. Use one of: {', '.join(LEVELS)}.")
    return normal


def parse_since(since: str | None, now: float | None = None) -> float | None:
    """`10m`, `2h`, `1d`, `30s`, `1w` ago, or an ISO 8601 time (no zone = local time) → epoch seconds."""
    if since is None:
        return None
    now = time.time() if now is None else now
    match = _RELATIVE.match(since)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {since!r} is neither a duration nor a time. Use a duration such as 30s, 10m, 2h, 1d "
            "or an ISO 8601 time such as 2024-05-01T14:30 (local time) or 2024-05-01T12:30:00Z."
        ) from None
    return moment.timestamp()  # naive datetimes are taken as local time, as a user types them


def build_query(args: LogsArgs) -> EventQuery:
    return EventQuery(
        function=args.function,
        request=args.request,
        task=args.task,
        min_level=parse_level(args.level),
        since=parse_since(args.since),
    )


def run(workdir: Path | None, args: LogsArgs, output: Output) -> int:
    if args.lines < 0:
        raise UsageError(f"-n/--lines must be 0 or more (got {args.lines}).")
    query = build_query(args)
    path = store_path(workdir)
    if args.follow and not path.is_file():
        output.warning(f"no event store yet at {path}; waiting for `edgecli serve` to start (Ctrl-C stops).")
        while not path.is_file():
            time.sleep(FOLLOW_POLL_S)
    with EventReader(path) as reader:
        query = reader.resolve_ids(query)
        # Everything up to `top` is the backlog; following resumes right after it.
        top = reader.last_id()
        backlog = reader.newest(query, args.lines, upto_id=top) if args.lines else []
        printer = _printer(output, args, backlog)
        for _, event in backlog:
            printer.emit(event)
        if args.function and not backlog and not reader.newest(EventQuery(function=args.function), 1):
            output.warning(
                f"no function named {args.function!r} has events in this project's store. Function names "
                "are the folders under supabase/functions/; `edgecli logs` without --function shows them all."
            )
        if args.follow:
            if not listening.running(path.parent):
                output.warning(
                    "no edgecli serve is running for this project: new events show here once one starts "
                    "(Ctrl-C stops)."
                )
            _follow(reader, query, top, printer)
    return 0


def _printer(output: Output, args: LogsArgs, backlog: list[StoredEvent]) -> EventPrinter:
    # Dates only when the events are not all from today; columns sized for the functions shown.
    today = time.localtime()[:3]
    with_date = any(time.localtime(event.ts)[:3] != today for _, event in backlog)
    functions = sorted({event.function for _, event in backlog if event.function})
    return EventPrinter(output, json_output=args.json_output, with_date=with_date, functions=functions)


def _follow(reader: EventReader, query: EventQuery, last: int, printer: EventPrinter) -> None:
    """Print events as they are stored until Ctrl-C (the CLI ends the command there with status 0)."""
    while True:
        if reader.replaced():  # deleted and made afresh by serve: its ids start again
            last = 0
        top = reader.last_id()
        if top == last:
            time.sleep(FOLLOW_POLL_S)
            continue
        for _, event in reader.between(query, last, top):
            printer.emit(event)
        last = top


__all__ = ["LogsArgs", "NoStoreError", "run"]
