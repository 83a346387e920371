"""edgecli — local runtime for Python edge functions.

Inside a worker, `from edgecli import EdgeRuntime, serve` is all a function needs. This module must stay
light: it imports the function API and nothing of the CLI (no typer, no rich).
"""

from edgecli.runtime.api import EdgeRuntime, serve

__version__ = "0.1.0"
__all__ = ["EdgeRuntime", "__version__", "serve"]
