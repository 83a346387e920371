"""What serve's relay and a worker serving a lent connection agree on about a request: which function
it is for, and the headers the function gets.

`/functions/v1/<name>[/<path>]` is for `<name>`; the function sees the scope a bare uvicorn mounted at
`/functions/v1` would give. A client's own claims header never reaches a function, verified or not:
functions trust it (see edgecli/host/auth.py).
"""

from __future__ import annotations

import re

from edgecli.answers import REQUEST_ID

PREFIX = "/functions/v1/"
ROOT_PATH = "/functions/v1"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
CLAIMS_HEADER = "x-edgecli-jwt-claims"
CLAIMS = CLAIMS_HEADER.encode()

PICKED = (b"authorization", b"content-length", b"expect", REQUEST_ID)

Headers = list[tuple[bytes, bytes]]


def function_name(path: str) -> str:
    """The function `path` is for; "" when it is for none."""
    if not path.startswith(PREFIX):
        return ""
    name = path[len(PREFIX) :].partition("/")[0]
    return name if NAME.match(name) else ""


def inbound(raw: Headers) -> tuple[Headers, dict[bytes, bytes]]:
    """The headers the function gets, and the first of each header in PICKED, in one pass."""
    headers: Headers = []
    picked: dict[bytes, bytes] = {}
    for key, value in raw:
        if key == CLAIMS:
            continue
        if key in PICKED and key not in picked:
            picked[key] = value
        headers.append((key, value))
    return headers, picked


def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
