"""Test Python edge functions against a real `edgecli serve`: `EdgeServer`, and the pytest plugin's
`edge` fixture (edgecli/testing/plugin.py), which gives each test the same object.

Importing this package imports nothing of the CLI, and not pytest: only the plugin module does. Its
names load when first asked for, so that pytest loading the plugin (in every run where edgecli is
installed) costs nothing until a test uses `edge`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecli.testing.records import TaskResult
    from edgecli.testing.server import EdgeServer, EdgeServerError
    from edgecli.testing.settings import SettingsError

__all__ = ["EdgeServer", "EdgeServerError", "SettingsError", "TaskResult"]
_HOMES = {
    "EdgeServer": "edgecli.testing.server",
    "EdgeServerError": "edgecli.testing.server",
    "SettingsError": "edgecli.testing.settings",
    "TaskResult": "edgecli.testing.records",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'edgecli.testing' has no attribute {name!r}")
