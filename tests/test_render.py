"""How each kind of event is put into words (shared by serve's terminal, logs, tasks show, invoke --wait)."""

from __future__ import annotations

import pytest

from edgecli import render
from edgecli.events import KIND_FIELDS, KINDS, Event
from edgecli.render import describe, fmt_duration, short_id

pytestmark = pytest.mark.timeout(5)


def _text(event: Event) -> str:
    return "".join(text for text, _ in describe(event).headline)


def _tones(event: Event) -> dict[str, str]:
    return {text.strip(): tone for text, tone in describe(event).headline}


def test_request_summary_from_fields_without_repeating_the_message() -> None:
    event = Event(
        "request",
        "POST /functions/v1/hello 503 2.5 ms",
        "error",
        fields={"method": "POST", "path": "/functions/v1/hello", "status": 503, "duration_ms": 2.5},
    )
    assert _text(event) == "POST /functions/v1/hello → 503  2.5 ms"
    assert _tones(event)["503"] == "bad"


def test_task_outcomes() -> None:
    base = {"name": "notify", "duration_ms": 1234.5, "error": None, "reason": None}
    done = Event("task_end", "task notify completed", fields={**base, "status": "completed"})
    cancelled = Event("task_end", fields={**base, "status": "cancelled", "reason": "termination"})
    failed = Event("task_end", fields={**base, "status": "failed", "error": "Traceback...\nKeyError: 'x'"})
    assert _text(done) == "task notify completed in 1.23 s"
    assert _text(cancelled) == "task notify cancelled (termination) after 1.23 s"
    assert _text(failed) == "task notify failed after 1.23 s: KeyError: 'x'"
    assert describe(failed).detail == "Traceback...\nKeyError: 'x'"
    assert (
        _text(Event("task_start", "task notify started", fields={"name": "notify"})) == "task notify started"
    )


def test_the_error_line_of_a_python_traceback_and_of_a_javascript_stack() -> None:
    python = (
        "Traceback (most recent call last):\n  File \"index.py\", line 2, in f\n    at_once()\nKeyError: 'x'"
    )
    syntax = '  File "index.py", line 1\n    x =\n       ^\nSyntaxError: invalid syntax'
    js = "Error: bg fail\n    at notify (file:///p/index.ts:3:9)\n    at async main (file:///e/worker.ts:386:3)"
    assert render.error_line(python) == "KeyError: 'x'"
    assert render.error_line(syntax) == "SyntaxError: invalid syntax"
    assert render.error_line(js) == "Error: bg fail"
    assert render.error_line("RuntimeError: once") == "RuntimeError: once"
    failed = Event(
        "task_end",
        fields={"name": "waitUntil@index.ts:3", "status": "failed", "duration_ms": 5.0, "error": js},
    )
    assert _text(failed) == "task waitUntil@index.ts:3 failed after 5.0 ms: Error: bg fail"


def test_worker_lifecycle() -> None:
    assert _text(Event("boot", "booted in 41 ms", fields={"boot_ms": 41})) == "worker booted in 41 ms"
    killed = Event(
        "shutdown", "worker stopped", "error", fields={"reason": "memory", "cpu_ms": 1500, "memory_mb": 270.2}
    )
    assert _text(killed) == "worker stopped (memory)  cpu 1.50 s, mem 270 MB"
    assert _tones(killed)["worker stopped"] == "bad"
    calm = Event("shutdown", fields={"reason": "early_drop"})
    assert _tones(calm)["worker stopped"] == "dim"
    assert _text(Event("beforeunload", fields={"reason": "wall_clock"})) == "beforeunload (wall_clock)"
    boot_error = Event("boot_error", fields={"error": 'Traceback...\n  File "index.py"\nSyntaxError: bad'})
    assert _text(boot_error) == "boot failed: SyntaxError: bad"
    assert "index.py" in (describe(boot_error).detail or "")
    hinted = Event(
        "boot_error",
        "ModuleNotFoundError: No module named 'yaml'; install PyYAML for ...",
        fields={"error": "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: yaml"},
    )
    assert _text(hinted) == "boot failed: ModuleNotFoundError: No module named 'yaml'; install PyYAML for ..."
    says_it_all = "index.py serves nothing: call serve(handler) at module level"
    nothing = Event("boot_error", says_it_all, fields={"error": says_it_all})
    assert _text(nothing) == f"boot failed: {says_it_all}" and describe(nothing).detail is None  # once


def test_messages_show_when_fields_are_missing_or_the_kind_is_unknown() -> None:
    assert _text(Event("request", "GET / 200")) == "request GET / 200"
    assert _text(Event("reload", "reloading hello: index.py changed")) == "reloading hello: index.py changed"
    assert _text(Event("reload", fields={"changes": ["a.py", "b.py"]})) == "reload: a.py, b.py"
    assert _text(Event("custom", "something")) == "custom something"
    multi = describe(Event("log", "first\nsecond\nthird"))
    assert _text(Event("log", "first\nsecond\nthird")) == "first" and multi.detail == "second\nthird"


def test_durations_and_ids() -> None:
    assert [fmt_duration(v) for v in (0.5, 3.25, 42, 1500, 125_000, None)] == [
        "0.50 ms",
        "3.2 ms",
        "42 ms",
        "1.50 s",
        "2m05s",
        "?",
    ]
    assert short_id("9f8e7d6c-5b4a-4321-8765-0123456789ab") == "9f8e7d6c"
    assert short_id("req-1") == "req-1" and short_id(None) == ""


def test_every_kind_is_described_from_a_field_it_has() -> None:
    assert set(render._DESCRIBERS) == set(KINDS)
    for kind, key in render._KEY_FIELD.items():
        assert key in KIND_FIELDS[kind], kind
