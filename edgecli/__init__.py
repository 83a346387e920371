"""edgecli — local runtime for Python edge functions.

Inside a worker, `from edgecli import EdgeRuntime, serve` is all a function needs. This module must stay
light: it imports nothing of the CLI (no typer, no rich), and not even the function API until a name of
it is asked for, so that processes that only need a part of the package (the event store's process,
`edgecli logs`) do not pay for asyncio and Starlette at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecli.runtime.api import EdgeRuntime, serve

__version__ = "0.1.0"
__all__ = ["EdgeRuntime", "__version__", "serve"]
_FUNCTION_API = ("EdgeRuntime", "serve")


def __getattr__(name: str) -> Any:
    if name in _FUNCTION_API:
        from edgecli.runtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgecli' has no attribute {name!r}")
