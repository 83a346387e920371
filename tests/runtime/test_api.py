"""Unit tests of the function API and task tracking, in-process (no worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edgecli import EdgeRuntime, serve
from edgecli.runtime import report
from edgecli.runtime.api import BeforeUnloadEvent, listeners, served
from edgecli.runtime.tasks import TaskTracker


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    reporter = report.Reporter("fn", "w1", lambda event: records.append(event.to_record()))
    monkeypatch.setattr(report, "reporter", reporter)
    return records


def test_wait_until_rejects_what_is_not_awaitable() -> None:
    async def job() -> None: ...

    with pytest.raises(TypeError, match=r"wait_until\(\) takes an awaitable.*wait_until\(notify\(name\)\)"):
        EdgeRuntime.wait_until(job)  # type: ignore[arg-type]  # the function, not its coroutine


def test_wait_until_outside_a_loop_says_where_it_can_be_called() -> None:
    async def job() -> None: ...

    coro = job()
    with pytest.raises(RuntimeError, match="running event loop"):
        TaskTracker().spawn(coro)
    coro.close()


@pytest.mark.timeout(10)
def test_tracker_reports_start_and_one_end_per_task(events: list[dict[str, Any]]) -> None:
    tracker = TaskTracker()
    tracker.prefix = "w1.t"

    async def ok() -> int:
        print_ctx.append(report.current_task.get())
        return 1

    async def bad() -> None:
        raise ValueError("nope")

    async def slow() -> None:
        await asyncio.sleep(10)

    print_ctx: list[str | None] = []
    failures: list[BaseException] = []
    tracker.on_failure = lambda exc, task: failures.append(exc)

    async def main() -> None:
        token = report.current_request.set("req-9")
        a = tracker.spawn(ok())
        b = tracker.spawn(bad())
        c = tracker.spawn(slow())
        report.current_request.reset(token)
        await asyncio.wait([a, b], timeout=5)
        await tracker.cancel_all("termination")
        assert not tracker.pending
        assert a.result() == 1 and c.cancelled()

    asyncio.run(main())
    starts = [e for e in events if e["kind"] == "task_start"]
    ends = {e["name"]: e for e in events if e["kind"] == "task_end"}
    assert [s["task"] for s in starts] == ["w1.t-1", "w1.t-2", "w1.t-3"]
    assert all(s["request"] == "req-9" for s in starts)
    assert print_ctx == ["w1.t-1"]  # the task runs with its own id in context
    assert ends["test_tracker_reports_start_and_one_end_per_task.<locals>.ok"]["status"] == "completed"
    failed = ends["test_tracker_reports_start_and_one_end_per_task.<locals>.bad"]
    assert failed["status"] == "failed" and "ValueError: nope" in failed["error"]
    cancelled = ends["test_tracker_reports_start_and_one_end_per_task.<locals>.slow"]
    assert cancelled["status"] == "cancelled" and cancelled["reason"] == "termination"
    assert [type(f) for f in failures] == [ValueError]


@pytest.mark.timeout(10)
def test_listeners_sync_and_async_in_order_and_failures_isolated() -> None:
    seen: list[str] = []

    @EdgeRuntime.on("beforeunload")
    def first(ev: BeforeUnloadEvent) -> None:
        seen.append("sync " + ev.detail["reason"])
        raise RuntimeError("listener bug")

    async def second(ev: BeforeUnloadEvent) -> None:
        await asyncio.sleep(0)
        seen.append("async " + ev.detail["reason"])

    EdgeRuntime.add_event_listener("beforeunload", second)
    errors: list[BaseException] = []
    try:
        asyncio.run(listeners.dispatch("beforeunload", BeforeUnloadEvent("cpu"), errors.append))
    finally:
        EdgeRuntime.remove_event_listener("beforeunload", first)
        EdgeRuntime.remove_event_listener("beforeunload", second)
    assert seen == ["sync cpu", "async cpu"]
    assert [str(e) for e in errors] == ["listener bug"]


def test_unknown_event_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="beforeunload, unhandledrejection"):
        EdgeRuntime.on("unload")(lambda ev: None)


def test_serve_records_the_target_and_rejects_non_callables() -> None:
    async def handler(req: Any) -> Any: ...

    old = served.target
    try:
        serve(handler)
        assert served.target is handler
        with pytest.raises(TypeError, match="serve\\(\\) takes a handler"):
            serve(42)
    finally:
        served.target = old


def test_printed_lines_are_one_event_each_but_a_traceback_stays_whole() -> None:
    import traceback

    from edgecli.runtime.capture import group_lines

    try:
        try:
            raise KeyError("a")
        except KeyError as exc:
            raise ValueError("b") from exc
    except ValueError as exc:
        tb = "".join(traceback.format_exception(exc)).rstrip("\n").split("\n")
    lines = ["step 1 done", "step 2 done", *tb, "after", "{", "  'nested': 1", "}"]
    groups = group_lines(lines)
    assert groups[:2] == ["step 1 done", "step 2 done"]
    assert groups[2].startswith("Traceback") and groups[2].endswith("ValueError: b")
    assert "KeyError: 'a'" in groups[2] and "direct cause" in groups[2]
    assert groups[3:] == ["after", "{\n  'nested': 1\n}"]
