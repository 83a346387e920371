"""serve's feed to the event store's process: order, bursts past the pipe, a dead store process
started again, what waits bounded.

Each test runs the real store process (python -m edgecli.store.writer) and reads the SQLite file it
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

from edgecli.errors import EdgecliError
from edgecli.events import Event
from edgecli.store import feed as feed_module
from edgecli.store.feed import StoreFeed

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
    feed = StoreFeed(path, 100_000, 100)
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
    feed = StoreFeed(path, 1_000_000, 1000)
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
    feed = StoreFeed(path, 1000, 100)
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
    feed = StoreFeed(path, 1000, 100)
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
    feed = StoreFeed(tmp_path / "events.db", 1000, 100)
    try:
        _started(feed)
    finally:
        _closed(feed)


def test_a_dead_store_process_is_started_again_and_what_came_meanwhile_is_written(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "RESTART_AFTER_S", 0.2)
    path = tmp_path / "events.db"
    feed = StoreFeed(path, 100_000, 100)
    first = feed.proc
    feed.emit(Event("log", "before"))
    wait_until(lambda: len(stored_events(path)) == 1, what="the first event to be stored")
    first.kill()  # kill -9
    first.wait(10)

    async def emit_after_death() -> None:
        for i in range(200):
            feed.emit(Event("log", f"meanwhile {i}"))
            await asyncio.sleep(0.002)
        wait_until(lambda: feed.restarts == 1, what="a new store process")

    asyncio.run(emit_after_death())
    _closed(feed)
    assert feed.proc is not first and first.returncode == -signal.SIGKILL
    assert [e.message for e in stored_events(path)] == ["before"] + [f"meanwhile {i}" for i in range(200)]
    err = capfd.readouterr().err
    assert err.count("the event store process stopped") == 1 and "a new one starts" in err


def test_what_waits_for_the_store_is_bounded_and_the_oldest_goes_first(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "RESTART_AFTER_S", 60.0)  # not started again within the test
    monkeypatch.setattr(feed_module, "HOLD_BYTES", 20_000)
    path = tmp_path / "events.db"
    feed = StoreFeed(path, 100_000, 100)
    feed.proc.kill()
    feed.proc.wait(10)

    async def flood() -> None:
        for i in range(100):
            feed.emit(Event("log", f"held {i} " + "x" * 1000))
            feed.flush()  # one write each: whole writes are what is dropped
            await asyncio.sleep(0)
        assert feed._unsent_bytes <= 20_000 and feed.dropped > 0

    asyncio.run(flood())
    monkeypatch.setattr(feed_module, "RESTART_AFTER_S", 0.0)
    _closed(feed)  # a last store process writes what was held
    messages = [e.message.split(" x")[0] for e in stored_events(path)]
    assert messages and messages == [f"held {i}" for i in range(100 - len(messages), 100)]
    assert f"{100 - len(messages)} events were dropped" in capfd.readouterr().err


def test_a_file_that_is_not_a_store_stops_serve_before_any_process_starts(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"not sqlite at all" * 100)
    children = {p.pid for p in psutil.Process().children()}
    with pytest.raises(EdgecliError, match="Could not read the event store"):
        StoreFeed(path, 1000, 100)
    assert {p.pid for p in psutil.Process().children()} == children
