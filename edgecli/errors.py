"""Errors a user can cause, each with the exit status the CLI turns it into.

Our own code raises these with a one-paragraph message (what, where, how to fix); the CLI prints the
message and exits with `exit_code` — never a traceback.
"""

from __future__ import annotations


class EdgecliError(Exception):
    """A failed operation (exit status 1)."""

    exit_code = 1


class UsageError(EdgecliError):
    """Bad usage: a bad argument or option value (exit status 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """Bad configuration: names the file, the line where known, the key and what is allowed (exit 2)."""


class ProjectNotFoundError(EdgecliError):
    """No `supabase/config.toml` in the working directory or any parent."""
