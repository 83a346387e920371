"""Unit tests: how a module's handler or app becomes one ASGI app."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgecli.runtime.api import served
from edgecli.runtime.loader import BootFailure, NotAResponse, handler_app, import_entrypoint, resolve_app


@pytest.fixture(autouse=True)
def fresh_target() -> Any:
    old = served.target
    served.target = None
    yield
    served.target = old


def load(tmp_path: Path, code: str) -> tuple[Any, bool]:
    entry = tmp_path / "index.py"
    entry.write_text(code)
    return resolve_app(import_entrypoint(entry), entry)


async def call(app: Any, path: str = "/f") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_module_level_handler_and_sync_handler(tmp_path: Path) -> None:
    app, is_asgi = load(
        tmp_path,
        "from starlette.responses import PlainTextResponse\n"
        "def handler(req):\n    return PlainTextResponse('hi')\n",
    )
    assert not is_asgi
    assert asyncio.run(call(app)) == (200, b"hi")


def test_module_level_asgi_app(tmp_path: Path) -> None:
    code = (
        "from starlette.applications import Starlette\nfrom starlette.responses import PlainTextResponse\n"
        "from starlette.routing import Route\n"
        "app = Starlette(routes=[Route('/f', lambda r: PlainTextResponse('routed'))])\n"
    )
    app, is_asgi = load(tmp_path, code)
    assert is_asgi
    assert asyncio.run(call(app)) == (200, b"routed")


def test_serving_nothing_is_a_boot_failure_saying_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(BootFailure, match=r"serve\(handler\)"):
        load(tmp_path, "x = 1\n")


def test_handler_returning_a_non_response() -> None:
    async def handler(req: Any) -> Any:
        return {"a": 1}

    with pytest.raises(NotAResponse, match="returned dict, not a Response"):
        asyncio.run(call(handler_app(handler)))
