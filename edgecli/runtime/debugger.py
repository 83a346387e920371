"""`edgecli serve --inspect`: a worker that a debugger (VS Code, PyCharm) attaches to, through debugpy.

serve passes the address and mode in the worker's environment; at boot, before the function's module is
imported, the worker listens there. Without --inspect, `breakpoint()` in a function says how to debug it
instead of failing the request (a worker has no terminal to run pdb in).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from edgecli.runtime import report
from edgecli.runtime.loader import BootFailure

ENV_ADDRESS = "EDGECLI_INSPECT"  # HOST:PORT
ENV_MODE = "EDGECLI_INSPECT_MODE"  # run | brk | wait
MODES = ("run", "brk", "wait")


class DebuggerUnavailable(BootFailure):
    """--inspect was asked for, and debugpy is not installed for the functions' Python."""


def start() -> bool:
    """Listen for a debugger if serve asked for one (True), else make breakpoint() explain (False).
    In `wait` and `brk` modes this returns only once a debugger is attached."""
    address = os.environ.get(ENV_ADDRESS)
    if not address:
        sys.breakpointhook = _no_debugger
        return False
    # debugpy warns on stderr that frozen stdlib modules may hide breakpoints there; a function's own
    # files are what is debugged.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        import debugpy
    except ImportError:
        raise DebuggerUnavailable(
            f"--inspect needs debugpy, which is not installed for {sys.executable}: install it with "
            f"{sys.executable} -m pip install 'edgecli[debug]' (or debugpy)"
        ) from None
    host, _, port = address.rpartition(":")
    debugpy.listen((host, int(port)))
    sys.breakpointhook = debugpy.breakpoint
    mode = os.environ.get(ENV_MODE, "run")
    if mode in ("wait", "brk"):
        debugpy.wait_for_client()
    if mode == "brk":
        debugpy.breakpoint()  # paused before the function's module runs: step in to its first line
    return True


def _no_debugger(*args: Any, **kwargs: Any) -> None:
    frame = sys._getframe(1)
    where = f"{os.path.basename(frame.f_code.co_filename)} line {frame.f_lineno}"
    report.reporter.log(
        f"breakpoint() at {where} skipped: no debugger is attached. Serve with `edgecli serve --inspect "
        "NAME` and attach VS Code or PyCharm to 127.0.0.1:5678 to stop there.",
        "warning",
    )
