"""Where a running `edgecli serve` listens, left in the project's state directory while it runs.

serve writes one small JSON file per process (`serve-<pid>.json`) once it listens, writes it again when a
reload changes the functions it serves (`Kept`), and removes it on exit; `invoke` and `logs -f` read them,
so `serve --port N` in one shell and `invoke NAME` in another just work. A file whose process is gone
(serve was killed) is ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PREFIX = "serve-"


@dataclass(frozen=True)
class Listening:
    url: str  # the base URL a client on this machine calls, e.g. http://127.0.0.1:54321
    pid: int
    functions: tuple[str, ...]
    started: float = dataclasses.field(default_factory=time.time)  # the newest serve is called first


def client_url(host: str, port: int) -> str:
    """The URL a local client uses for a server bound to `host` (a wildcard address means this host)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record(state_dir: Path, listening: Listening) -> Path:
    """Leave `listening` in `state_dir`; the caller removes the returned file when serve stops."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{_PREFIX}{listening.pid}.json"
    staged = path.with_suffix(".tmp")
    data = {
        "url": listening.url,
        "pid": listening.pid,
        "functions": list(listening.functions),
        "started": listening.started,
    }
    staged.write_text(json.dumps(data), encoding="utf-8")
    os.replace(staged, path)  # a reader never sees half a file
    return path


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class Kept:
    """An event sink keeping serve's record true while it runs: a reload that adds or removes functions
    writes it again, so that `invoke` of a function added since calls this serve, not another one."""

    def __init__(self, state_dir: Path, listening: Listening, served: Callable[[], tuple[str, ...]]) -> None:
        self.state_dir = state_dir
        self.listening = listening
        self.served = served  # the functions served now
        self.path: Path | None = record(state_dir, listening)

    def emit(self, event: Any) -> None:
        if event.kind != "reload" or self.path is None:
            return
        names = self.served()
        if names != self.listening.functions:
            self.listening = dataclasses.replace(self.listening, functions=names)
            with contextlib.suppress(OSError):  # the state folder went away: invoke falls back to config
                record(self.state_dir, self.listening)

    def forget(self) -> None:
        if self.path is not None:
            forget(self.path)
            self.path = None


def running(state_dir: Path) -> list[Listening]:
    """The serves running for this project, the most recently started first."""
    try:
        paths = list(state_dir.glob(f"{_PREFIX}*.json"))
    except OSError:
        return []
    found = []
    for path in paths:
        if not path.stem[len(_PREFIX) :].isdigit():
            continue  # not a serve's own record (serve-status-<pid>.json, which `functions list` reads)
        listening = _read(path)
        if listening is not None and _alive(listening.pid):
            found.append(listening)
    return sorted(found, key=lambda listening: listening.started, reverse=True)


def url_for(state_dir: Path, function: str | None = None) -> str | None:
    """The running serve to call: the newest one serving `function`, else the newest one."""
    serves = running(state_dir)
    for listening in serves:
        if function in listening.functions:
            return listening.url
    return serves[0].url if serves else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> Listening | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        functions = tuple(str(f) for f in data.get("functions", ()))
        started = float(data["started"]) if "started" in data else _mtime(path)  # an older serve's record
        return Listening(str(data["url"]), int(data["pid"]), functions, started)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written by a serve of another version, or not ours: not a serve to call


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
