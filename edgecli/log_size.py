"""How big one log record may be: Supabase caps a log message at 10,000 characters, and so do we.

Shared by the worker (what a function prints or logs) and serve (what it writes to fd 1/2), so a record
is the same size whichever way its text came. Light on purpose: workers import it.
"""

from __future__ import annotations

MAX_MESSAGE = 10_000


def truncate(message: str, size: int | None = None) -> str:
    """`message` cut to MAX_MESSAGE characters, with a marker giving the original size (`size` when only
    the start of a longer text was kept)."""
    size = len(message) if size is None else size
    if size <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}… [truncated: {size:,} characters]"
