"""What a running serve tells `edgecli functions list`: its workers, their state and requests served.

A tiny HTTP endpoint on a port of its own (127.0.0.1, chosen by the OS), so it can never shadow a
function's route; its address is written to `supabase/.temp/edgecli/serve-status-<pid>.json` while
serve runs (one file per serve: two serves of one project are both listed).
`GET /` answers one JSON object: `{"pid", "url", "functions": {name: {"requests", "workers": [...]}}}`.
Request counts come from the `request` events serve already emits, so no hot path is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgecli.events import Event

STATUS_PREFIX = "serve-status"  # serve-status-<pid>.json; an older edgecli wrote serve-status.json
READ_LIMIT = 8192


class RequestCounter:
    """An event sink counting `request` events per function and per worker."""

    def __init__(self) -> None:
        self.by_function: Counter[str] = Counter()
        self.by_worker: Counter[str] = Counter()

    def emit(self, event: Event) -> None:
        if event.kind != "request" or event.function is None:
            return
        self.by_function[event.function] += 1
        if event.worker is not None:
            self.by_worker[event.worker] += 1


Snapshot = Callable[[], Mapping[str, Any]]


def status_files(state_dir: Path) -> list[Path]:
    """The status files of the serves of a project (some may be stale: a serve killed outright)."""
    try:
        return sorted(state_dir.glob(f"{STATUS_PREFIX}*.json"))
    except OSError:
        return []


class StatusServer:
    """Serves `snapshot()` as JSON, and advertises itself in the state folder while it runs."""

    def __init__(self, state_dir: Path, url: str, snapshot: Snapshot) -> None:
        self.path = state_dir / f"{STATUS_PREFIX}-{os.getpid()}.json"
        self.url = url
        self.snapshot = snapshot
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # Any failure here only means `functions list` shows the configuration alone: serving goes on.
        try:
            self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
            port = self._server.sockets[0].getsockname()[1]
            record = {"pid": os.getpid(), "url": self.url, "status": f"http://127.0.0.1:{port}/"}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(record), encoding="utf-8")
        except OSError:
            pass

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = json.dumps({"pid": os.getpid(), "url": self.url, **self.snapshot()}).encode()
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
