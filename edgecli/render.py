"""What an event says, in words: one headline per kind plus an optional detail block (a traceback).

Pure text and "tones" (good/warn/bad/...), no Rich: console.py maps tones to colours. Kept apart so the
serve terminal, `logs`, `tasks show` and `invoke --wait` describe events identically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from edgecli.events import Event

# A headline is a few (text, tone) segments; tone is one of "", "dim", "good", "warn", "bad", "accent".
Segment = tuple[str, str]

# Exit reasons that are business as usual: not worth a warning colour.
_CALM_EXITS = frozenset({"termination", "early_drop", "reload", "shutdown", "idle", "oneshot", "exit"})


class Described(NamedTuple):  # a NamedTuple, not a dataclass: serve builds one per event, ~3x cheaper
    headline: list[Segment]
    detail: str | None = None  # multi-line text printed under the headline (tracebacks)


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return "?"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def short_id(value: str | None, width: int = 8) -> str:
    """Long ids (uuids) print as their first `width` characters; filters accept such prefixes."""
    if not value:
        return ""
    return value if len(value) <= width + 2 else value[:width]


def error_line(text: str) -> str:
    """The line that names the error: a Python traceback's last, a JavaScript stack's first (its frames,
    `at ...`, follow it)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[-1].startswith("at ") and not lines[0].startswith("Traceback"):
        return lines[0]
    return lines[-1]


def status_tone(status: Any) -> str:
    code = status if isinstance(status, int) else 0
    if 200 <= code < 300:
        return "good"
    if 300 <= code < 400:
        return "accent"
    if 400 <= code < 500:
        return "warn"
    return "bad"


def _split(message: str) -> tuple[str, str | None]:
    first, _, rest = message.rstrip().partition("\n")
    return first, (rest or None)


_LEVEL_TONE = {"warning": "warn", "error": "bad", "debug": "dim"}


def _log(event: Event) -> Described:
    tone = _LEVEL_TONE.get(event.level, "")
    first, rest = _split(event.message)
    if rest is not None and first.startswith("Traceback"):
        # A bare traceback: headline with the exception line, the whole traceback below.
        return Described([(error_line(event.message), tone)], event.message.rstrip())
    return Described([(first, tone)], rest)


def _request(event: Event) -> Described:
    f = event.fields
    status = f.get("status")
    return Described(
        [
            (f"{f.get('method', '?')} {f.get('path', '?')} ", ""),
            ("→ ", "dim"),
            (str(status if status is not None else "?"), status_tone(status)),
            (f"  {fmt_duration(f.get('duration_ms'))}", "dim"),
        ]
    )


def _task_start(event: Event) -> Described:
    return Described(
        [("task ", "dim"), (str(event.fields.get("name") or "?"), "accent"), (" started", "dim")]
    )


def _task_end(event: Event) -> Described:
    f = event.fields
    name = str(f.get("name") or "?")
    status = str(f.get("status") or "?")
    took = fmt_duration(f.get("duration_ms"))
    if status == "completed":
        return Described([("task ", "dim"), (name, "accent"), (" completed", "good"), (f" in {took}", "dim")])
    if status == "cancelled":
        reason = f" ({f['reason']})" if f.get("reason") else ""
        return Described(
            [("task ", "dim"), (name, "accent"), (f" cancelled{reason}", "warn"), (f" after {took}", "dim")]
        )
    error = str(f.get("error") or "")
    headline = [("task ", "dim"), (name, "accent"), (f" {status}", "bad"), (f" after {took}", "dim")]
    if error:
        headline.append((f": {error_line(error)}", "bad"))
    return Described(headline, error.rstrip() if "\n" in error.strip() else None)  # a one-liner: once


def _boot(event: Event) -> Described:
    return Described([("worker booted", "good"), (f" in {fmt_duration(event.fields.get('boot_ms'))}", "dim")])


def _boot_error(event: Event) -> Described:
    error = str(event.fields.get("error") or event.message or "").rstrip()
    first, rest = _split(event.message)
    headline = first if first and rest is None and not first.startswith("Traceback") else error_line(error)
    # A message that is the whole story (no traceback) is printed once, as the headline.
    detail = error if "\n" in error else None
    return Described([("boot failed", "bad"), (f": {headline}", "bad")], detail)


def _beforeunload(event: Event) -> Described:
    return Described([("beforeunload", "warn"), (f" ({event.fields.get('reason', '?')})", "warn")])


def _shutdown(event: Event) -> Described:
    f = event.fields
    reason = str(f.get("reason") or "?")
    usage = []
    if f.get("cpu_ms") is not None:
        usage.append(f"cpu {fmt_duration(f['cpu_ms'])}")
    if f.get("memory_mb") is not None:
        usage.append(f"mem {float(f['memory_mb']):.0f} MB")
    tone = "bad" if event.level == "error" else "dim" if reason in _CALM_EXITS else "warn"
    headline = [("worker stopped", tone), (f" ({reason})", tone)]
    if usage:
        headline.append(("  " + ", ".join(usage), "dim"))
    return Described(headline)


def _reload(event: Event) -> Described:
    changes = event.fields.get("changes")
    if isinstance(changes, list | tuple):
        changes = ", ".join(str(c) for c in changes)
    return Described([("reload", "accent"), (f": {changes}" if changes else "", "")])


_DESCRIBERS: dict[str, Callable[[Event], Described]] = {
    "log": _log,
    "request": _request,
    "task_start": _task_start,
    "task_end": _task_end,
    "boot": _boot,
    "boot_error": _boot_error,
    "beforeunload": _beforeunload,
    "shutdown": _shutdown,
    "reload": _reload,
}


# The field each describer needs; without it (an older or foreign event) the runtime's message is shown.
_KEY_FIELD = {
    "request": "status",
    "task_start": "name",
    "task_end": "status",
    "boot": "boot_ms",
    "boot_error": "error",
    "beforeunload": "reason",
    "shutdown": "reason",
}


def describe(event: Event) -> Described:
    """The headline (and traceback, if any) for `event`.

    Kinds with fields are described from them (the runtime's message restates the same facts); a log
    line, a reload and anything unknown show the message itself.
    """
    key = _KEY_FIELD.get(event.kind)
    if event.kind == "log":
        return _log(event)
    if key is not None and event.fields.get(key) is not None:
        return _DESCRIBERS[event.kind](event)
    if event.kind == "reload" and not event.message:
        return _reload(event)
    first, rest = _split(event.message)
    tone = _LEVEL_TONE.get(event.level, "")
    label = [] if event.kind in ("reload", "log") else [(f"{event.kind} ", "accent")]
    return Described([*label, (first, tone)] if first else label, rest)
