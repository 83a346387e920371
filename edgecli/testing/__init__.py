"""Test Python edge functions against a real `edgecli serve`: `EdgeServer`, and the pytest plugin's
`edge` fixture (edgecli/testing/plugin.py), which gives each test the same object.

Importing this package imports nothing of the CLI, and not pytest: only the plugin module does.
"""

from edgecli.testing.records import TaskResult
from edgecli.testing.server import EdgeServer, EdgeServerError
from edgecli.testing.settings import SettingsError

__all__ = ["EdgeServer", "EdgeServerError", "SettingsError", "TaskResult"]
