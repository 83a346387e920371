"""JSON for frames and event rows, which serve and its workers encode and decode by the thousand a second.

`encode_json`: compact ASCII JSON, with `str()` for what JSON cannot hold.

It is `json.JSONEncoder(separators=(",", ":"), default=str).encode` without the part that costs most on
small objects: `encode` builds a new C encoder object on every call (~1.5 µs of the ~4 an event row
takes). Here the C encoder is made once. It keeps no state between calls (no circular-reference
markers: a structure holding itself ends in RecursionError, not ValueError), so threads may share it.
Where the C encoder is missing or its private signature differs, the standard `encode` serves instead.

`decode_json`: `json.loads` for one JSON text as these encoders write it (no surrounding whitespace),
calling the decoder's C scanner directly: ~1.0 µs for an event row, against ~1.75 through `loads`'s
Python wrapper and its two whitespace regex matches.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

_standard: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), default=str).encode
# Values whose encoding must come out the same both ways before the C encoder is trusted.
_PROBE = [1.5, -0.0, 10**20, True, None, 'é\n"\\ \udcff 😀', {"k": [float("inf"), float("nan")]}, object]


def _reused_c_encoder() -> Callable[[Any], str] | None:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        c_encode = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)

        def encode(obj: Any) -> str:
            return "".join(c_encode(obj, 0))

        if encode(_PROBE) != _standard(_PROBE):
            return None
    except Exception:  # another Python's private signature: use the standard encoder
        return None
    return encode


encode_json: Callable[[Any], str] = _reused_c_encoder() or _standard


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # C; clears its memo after each call


def decode_json(text: str) -> Any:
    """The value of `text`, which must be exactly one JSON value; ValueError otherwise."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError(f"not JSON: {text[:40]!r}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON at {end}: {text[end : end + 40]!r}")
    return value
