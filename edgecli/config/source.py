"""config.toml as text and as parsed TOML: reading it, pointing at a key's file:line, and the typed reads
whose errors say where the value is, what is wrong and what is allowed.

The file is parsed with tomllib (fast, exact positions for syntax errors); keys' line numbers are found by
scanning the text, because parsed TOML values do not remember where they came from.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecli.config.model import Limits
from edgecli.errors import ConfigError, ProjectNotFoundError

# (type, lowest, highest) per limit key: generous maxima, so that only typos and unit mix-ups are refused.
LIMIT_SPECS: dict[str, tuple[type, int, int]] = {
    "max_parallelism": (int, 0, 1024),
    "wall_clock_limit_sec": (float, 0, 86_400),
    "cpu_time_soft_limit_ms": (int, 0, 3_600_000),
    "cpu_time_hard_limit_ms": (int, 0, 3_600_000),
    "memory_limit_mb": (int, 0, 1_048_576),
    "request_wait_timeout_ms": (int, 0, 3_600_000),
    "request_idle_timeout_sec": (float, 0, 86_400),
    "graceful_exit_timeout_sec": (float, 0, 3_600),
    "boot_timeout_sec": (float, 0, 3_600),
    "max_body_mb": (float, 0, 1_048_576),
}
_KEY_LINE = re.compile(r"""^("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


@dataclass(frozen=True)
class Source:
    """config.toml's text and how to point at a key in it."""

    shown: str  # the path as the user should read it: relative to the project dir
    text: str

    def line_of(self, table: tuple[str, ...], key: str | None = None) -> int | None:
        """Line of `key` inside `[table]` (or of the table header), None when it cannot be found."""
        header_line: int | None = None
        current: tuple[str, ...] = ()
        for number, raw in enumerate(self.text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("[") and not line.startswith("[["):
                current = _header_path(line)
                if current == table and header_line is None:
                    header_line = number
                continue
            match = _KEY_LINE.match(line)
            if key is not None and current == table and match and _unquote(match.group(1)) == key:
                return number
        return header_line

    def where(self, table: tuple[str, ...], key: str | None = None) -> str:
        line = self.line_of(table, key)
        return f"{self.shown}:{line}" if line else self.shown

    def error(self, table: tuple[str, ...], key: str | None, problem: str, fix: str = "") -> ConfigError:
        fix = fix or f"Fix it in {self.shown}."
        return ConfigError(f"{self.where(table, key)}: {_name(table, key)} {problem}. {fix}")


def _header_path(line: str) -> tuple[str, ...]:
    inner = line[1 : line.find("]")] if "]" in line else line[1:]
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""", inner)
    return tuple(_unquote(part.strip()) for part in parts)


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def _name(table: tuple[str, ...], key: str | None) -> str:
    if not table:
        return key or ""
    header = f"[{'.'.join(table)}]"
    return f"{header} {key}" if key else header


def show(value: object) -> str:
    """A value the way it looks in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def read_file(project_dir: Path) -> tuple[Source, dict[str, Any]]:
    path = project_dir / "supabase" / "config.toml"
    shown = "supabase/config.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectNotFoundError(
            f"{shown} not found in {project_dir}. Run `edgecli init` there to create it, or pass "
            "--workdir with the directory that holds supabase/config.toml."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{shown}: cannot be read ({exc}). Check the file's permissions and encoding."
        ) from None
    return Source(shown, text), parse_toml(text, shown)


def parse_toml(text: str, shown: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a ConfigError naming `shown`, the line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(shown, exc) from None


def _syntax_error(shown: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    where = f"{shown}:{match.group(1)}" if match else shown
    what = message[: match.start()].strip() if match else message
    column = f" (column {match.group(2)})" if match else ""
    return ConfigError(
        f"{where}: not valid TOML{column}: {what}. Fix the syntax; the format is described at "
        "https://toml.io."
    )


def table_in(src: Source, parent: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The table at path[-1] inside `parent`, or {} when absent; anything else is a config error."""
    value = parent.get(path[-1], {})
    if not isinstance(value, dict):
        raise src.error(path[:-1], path[-1], f"is {show(value)}, but must be a table", "")
    return value


def read_number(
    src: Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], kind: type, lo: int, hi: int
) -> int | float | None:
    """`data[key]` checked against type and range, None when absent. Booleans are not numbers here."""
    if key not in data:
        return None
    value = data[key]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_float = kind is float and isinstance(value, float) and math.isfinite(value)
    allowed = f"allowed: a {'whole ' if kind is int else ''}number from {lo} to {hi}"
    if not (is_int or is_float):
        raise src.error(table, key, f"is {show(value)}; {allowed}")
    if not lo <= value <= hi:
        raise src.error(table, key, f"is {show(value)}, out of range; {allowed}")
    return float(value) if kind is float else value


def read_int(
    src: Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], lo: int, hi: int
) -> int | None:
    value = read_number(src, table, key, data, int, lo, hi)
    return None if value is None else int(value)


def read_bool(src: Source, table: tuple[str, ...], key: str, data: Mapping[str, Any], default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise src.error(table, key, f"is {show(value)}; allowed: true or false (without quotes)")
    return value


def read_limits(src: Source, table: tuple[str, ...], data: Mapping[str, Any], base: Limits) -> Limits:
    """`base` with the limit keys set in `data` applied; soft CPU must not exceed hard CPU."""
    values: dict[str, Any] = {}
    for key, (kind, lo, hi) in LIMIT_SPECS.items():
        value = read_number(src, table, key, data, kind, lo, hi)
        if value is not None:
            values[key] = value
    limits = replace(base, **values)
    soft, hard = limits.cpu_time_soft_limit_ms, limits.cpu_time_hard_limit_ms
    if soft and hard and soft > hard:
        key = "cpu_time_soft_limit_ms" if "cpu_time_soft_limit_ms" in values else "cpu_time_hard_limit_ms"
        raise src.error(
            table,
            key,
            f"makes the CPU soft limit ({soft} ms) exceed the hard limit ({hard} ms)",
            "Keep cpu_time_soft_limit_ms at or below cpu_time_hard_limit_ms (0 turns either off) in "
            f"{src.shown}.",
        )
    return limits
