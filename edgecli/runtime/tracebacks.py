"""Tracebacks as a function's author needs them: their own frames, edgecli's only when it is the cause.

A handler's exception passes through the worker loop and the module loader (and importlib, at boot, or
the standard library's hand-off of a sync handler to a thread) before it reaches the user's code; those
frames say nothing about the user's mistake and make it read like an edgecli crash. They are dropped
from the top of each traceback. When no frame is left, the error happened in edgecli itself, and its
whole traceback is shown.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
# The standard library's hand-off of a sync handler to a thread (loader.handler_app): edgecli's call.
_STDLIB = os.path.dirname(os.__file__)
_HAND_OFF = (
    os.path.join(_STDLIB, "asyncio", "threads.py"),
    os.path.join(_STDLIB, "concurrent", "futures", "thread.py"),
)
# Import names whose package is called otherwise on PyPI: the pip line must name the package.
_PACKAGE_OF = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "dateutil": "python-dateutil",
    "google.protobuf": "protobuf",
    "psycopg2": "psycopg2-binary",
}


class UserMistake(Exception):
    """A function used edgecli the wrong way; the message says what to change, so no traceback is shown."""


def format_exception(exc: BaseException) -> str:
    """The traceback text of `exc` (and of the exceptions it was raised from), without edgecli's frames
    above the user's."""
    if isinstance(exc, UserMistake):
        return f"{type(exc).__name__}: {exc}"
    report = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [report]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _in_users_file(current):
            # A syntax error in the user's module: where it is (file, line, caret) is the whole story,
            # the frames are only importlib compiling it.
            current.stack = traceback.StackSummary.from_list([])
        else:
            current.stack = traceback.StackSummary.from_list(_from_the_users_code(list(current.stack)))
        pending += [current.__cause__, current.__context__]
    return "".join(report.format()).rstrip()


def _from_the_users_code(frames: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """From where edgecli first called the user's code; all of it when edgecli never did."""
    for i in range(1, len(frames)):
        if _is_ours(frames[i - 1].filename) and not _is_ours(frames[i].filename):
            return frames[i:]
    return frames  # raised by edgecli itself: every frame matters


def _in_users_file(report: traceback.TracebackException) -> bool:
    filename = getattr(report, "filename", None)  # set for syntax errors only
    if not isinstance(filename, str) or not issubclass(report.exc_type or type(None), SyntaxError):
        return False
    return not _is_ours(filename)


def _is_ours(filename: str) -> bool:
    return (
        filename.startswith(_PACKAGE_DIR) or filename.startswith("<frozen importlib") or filename in _HAND_OFF
    )


def missing_module_hint(exc: BaseException) -> str | None:
    """For a module that is not installed: which package, for which interpreter, and the pip line."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    name = exc.name
    package = _PACKAGE_OF.get(name) or _PACKAGE_OF.get(name.split(".")[0]) or name.split(".")[0]
    python = sys.executable
    return f"install {package} for the Python that runs your functions: {python} -m pip install {package}"


def boot_failure(exc: BaseException) -> tuple[str, str]:
    """A failed import or start of a function as (one-line message, traceback for the log)."""
    message = f"{type(exc).__name__}: {exc}"
    hint = missing_module_hint(exc)
    return (message if hint is None else f"{message}; {hint}"), format_exception(exc)
