"""serve's feed to the event store's process: order, bursts past the pipe, a dead or interrupted store.

Each test runs the real store process (python -m edgecli.store_process) and reads the SQLite file it
wrote; none leaves the process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from serving import stored_events, wait_until

from edgecli import store_process
from edgecli.errors import EdgecliError
from edgecli.events import Event
from edgecli.host.store_feed import StoreFeed

pytestmark = pytest.mark.timeout(60)


def _events(count: int, size: int = 10) -> list[Event]:
    """serve's own events (encoded by the feed) mixed with workers' (already rows, as off the wire)."""
    events = []
    for i in range(count):
        event = Event("log", f"line {i} " + "x" * size, function="fn", request=f"r{i}", ts=1000.0 + i)
        events.append(Event.from_row_json(event.to_row_json()) if i % 2 else event)
    return events


def _closed(feed: StoreFeed) -> None:
    feed.close()
    assert feed.proc.returncode == 0
    assert not psutil.pid_exists(feed.proc.pid) or psutil.Process(feed.proc.pid).status() == "zombie"


def test_events_emitted_on_the_loop_are_stored_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    feed = StoreFeed(path, retention=100_000)
    sent = _events(3000)

    async def emit_in_passes() -> None:
        for start in range(0, len(sent), 100):  # like serve: some events per loop pass
            for event in sent[start : start + 100]:
                feed.emit(event)
            await asyncio.sleep(0)

    asyncio.run(emit_in_passes())
    _closed(feed)
    stored = stored_events(path)
    assert [e.message for e in stored] == [e.message for e in sent]
    assert [(e.ts, e.request, e.function) for e in stored] == [(e.ts, e.request, e.function) for e in sent]


def test_a_burst_larger_than_the_pipe_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    feed = StoreFeed(path, retention=1_000_000)
    sent = _events(20_000, size=1000)  # ~20 MB of rows: many times what the pipe holds

    async def burst() -> tuple[bool, int]:
        for event in sent:
            feed.emit(event)
        feed.flush()
        held_back = bool(feed._unsent)  # the pipe is full: the rest waits, and emit has returned
        passes = 0
        while feed._unsent:  # the loop goes on running while the pipe drains
            passes += 1
            await asyncio.sleep(0.001)
        return held_back, passes

    held_back, passes = asyncio.run(burst())
    _closed(feed)
    assert held_back and passes > 0
    assert len(stored_events(path)) == len(sent)


def test_events_emitted_off_the_loop_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    feed = StoreFeed(path, retention=1000)
    feed.emit(Event("shutdown", "bye", function="fn"))
    assert not feed._rows  # not held for a timer that no loop would run
    _closed(feed)
    assert [e.kind for e in stored_events(path)] == ["shutdown"]


def _started(feed: StoreFeed) -> None:
    """Wait until the store process runs its main (it lowers its priority there, after its signals)."""
    if sys.platform.startswith("linux"):
        wait_until(lambda: os.sched_getscheduler(feed.proc.pid) == os.SCHED_IDLE, 10, what="SCHED_IDLE")


def test_the_store_is_out_of_reach_of_ctrl_c_and_writes_every_row_once_serve_closes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    feed = StoreFeed(path, retention=1000)
    # A Ctrl-C goes to the terminal's foreground process group: serve's, not the store's.
    assert os.getpgid(feed.proc.pid) != os.getpgid(0)
    feed.emit(Event("log", "before"))
    _started(feed)
    os.kill(feed.proc.pid, signal.SIGINT)  # and sent to it directly, it is ignored too
    os.kill(feed.proc.pid, signal.SIGTERM)
    feed.emit(Event("log", "after"))
    _closed(feed)
    assert [e.message for e in stored_events(path)] == ["before", "after"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_the_store_runs_at_idle_priority(tmp_path: Path) -> None:
    feed = StoreFeed(tmp_path / "events.db", retention=1000)
    try:
        _started(feed)
    finally:
        _closed(feed)


def test_a_dead_store_process_is_reported_once_and_serving_goes_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    feed = StoreFeed(tmp_path / "events.db", retention=1000)
    feed.proc.kill()
    feed.proc.wait(10)

    async def emit_after_death() -> None:
        for i in range(5):
            feed.emit(Event("log", f"lost {i}"))
            feed.flush()
            await asyncio.sleep(0)

    asyncio.run(emit_after_death())
    feed.close()
    err = capfd.readouterr().err
    assert err.count("the event store process stopped") == 1
    assert "restart `edgecli serve`" in err


def test_a_file_that_is_not_a_store_stops_serve_before_any_process_starts(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"not sqlite at all" * 100)
    children = {p.pid for p in psutil.Process().children()}
    with pytest.raises(EdgecliError, match="is not a readable edgecli event store"):
        StoreFeed(path, retention=1000)
    assert {p.pid for p in psutil.Process().children()} == children


class _Rows:
    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def emit_lines(self, lines: bytes) -> None:
        assert lines.endswith(b"\n")
        self.rows.extend(lines.split(b"\n")[:-1])


@pytest.mark.parametrize("read_size", [store_process.READ_SIZE, 3])  # 3: rows span reads
def test_the_store_process_keeps_whole_lines_and_drops_a_row_cut_short(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, read_size: int
) -> None:
    monkeypatch.setattr(store_process, "READ_SIZE", read_size)
    read, write = os.pipe()
    os.write(write, b'[1,"a"]\n[2,')
    os.write(write, b'"b"]\n[3,"c')  # serve killed in the middle of this row
    os.close(write)
    rows = _Rows()
    store_process.feed(read, rows)  # type: ignore[arg-type]
    os.close(read)
    assert rows.rows == [b'[1,"a"]', b'[2,"b"]']
    assert "dropped a row cut short (5 bytes)" in capfd.readouterr().err
