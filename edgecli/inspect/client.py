"""The one HTTP request `edgecli invoke` makes, with the standard library's http.client.

An HTTP client library costs invoke more start-up than the call itself (bench/bench_startup.py); invoke
sends one request and reads one whole response, which http.client does plainly.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from edgecli.errors import EdgecliError, UsageError

# Status codes of the edge runtime that the HTTP registry does not name.
_EDGE_REASONS = {546: "Resource Limit"}  # Supabase's WORKER_LIMIT: a worker hit a resource limit


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased, in the order the server sent them
    content: bytes

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    @property
    def charset(self) -> str:
        _, _, params = self.header("content-type").partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"


def reason_phrase(status: int, sent: str = "") -> str:
    """The server's reason phrase, else the standard one, else the edge runtime's own name for it."""
    if sent.strip():
        return sent.strip()
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EDGE_REASONS.get(status, "")


def send(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> Response:
    """Send one request; connection problems become EdgecliErrors that say what to do."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {base} is not a usable server URL; e.g. http://127.0.0.1:54321.")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    except ValueError as exc:  # a port that is not a number
        raise UsageError(
            f"--url {base} is not a usable server URL ({exc}); e.g. http://127.0.0.1:54321."
        ) from None
    try:
        conn.request(method, target, body=body, headers=headers)
        answer = conn.getresponse()
        content = answer.read()
        return Response(
            answer.status,
            reason_phrase(answer.status, answer.reason),
            [(name.lower(), value) for name, value in answer.getheaders()],
            content,
        )
    except (ConnectionRefusedError, socket.gaierror):
        raise EdgecliError(
            f"nothing answers on {base}: no edgecli serve is running there. Start one with `edgecli serve`, "
            "or say where yours listens with --port N or --url URL."
        ) from None
    except TimeoutError:
        raise EdgecliError(
            f"{base} did not answer {method} {url} within {timeout:g} s. Raise --timeout if the function is "
            "slow, or look at `edgecli logs` for what it is doing."
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise EdgecliError(f"calling {url} failed: {exc or type(exc).__name__}.") from None
    finally:
        conn.close()
