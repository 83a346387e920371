"""Just enough YAML to print manifests: mappings, sequences and scalars, block style.

Any string that could read as something else (a number, a boolean, null, or text with YAML syntax in it)
is written double-quoted, with JSON's escapes, which YAML reads the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_LOOKS_LIKE_OTHER = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"})


def dump(value: Any) -> str:
    lines: list[str] = []
    _node(value, 0, lines)
    return "\n".join(lines) + "\n"


def dump_all(documents: Sequence[Any]) -> str:
    return "---\n".join(dump(doc) for doc in documents)


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _LOOKS_LIKE_OTHER:
        return text
    return json.dumps(text)


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _node(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{scalar(key)}:")
                _node(item, indent + 2, lines)
            else:
                lines.append(f"{pad}{scalar(key)}: {_empty_or_scalar(item)}")
    elif isinstance(value, list | tuple):
        for item in value:
            if _is_block(item):
                start = len(lines)
                _node(item, indent + 2, lines)
                lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
            else:
                lines.append(f"{pad}- {_empty_or_scalar(item)}")
    else:
        lines.append(pad + scalar(value))


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return scalar(value)
