"""The function API: `EdgeRuntime` and `serve` (DESIGN §3). Filled in by the runtime issue."""

from __future__ import annotations

from typing import Any


class EdgeRuntime:
    @staticmethod
    def wait_until(awaitable: Any) -> Any:
        raise NotImplementedError


def serve(handler: Any) -> None:
    raise NotImplementedError
