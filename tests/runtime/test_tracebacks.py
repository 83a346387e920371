"""Tracebacks show the user's frames; edgecli's only when edgecli is the cause."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgecli.runtime.loader import NotAResponse, import_entrypoint
from edgecli.runtime.tracebacks import boot_failure, format_exception, missing_module_hint

pytestmark = pytest.mark.timeout(10)


def _import_error(tmp_path: Path, source: str) -> BaseException:
    entry = tmp_path / "index.py"
    entry.write_text(source)
    try:
        import_entrypoint(entry)  # through edgecli's loader and importlib, as a worker boots it
    except Exception as exc:
        return exc
    raise AssertionError("the module imported")


def test_edgecli_and_importlib_frames_above_the_users_are_dropped(tmp_path: Path) -> None:
    exc = _import_error(tmp_path, "def f():\n    return 1 / 0\n\nf()\n")
    text = format_exception(exc)
    assert text.startswith("Traceback (most recent call last):\n")
    assert "loader.py" not in text and "<frozen importlib" not in text
    assert 'index.py", line 4, in <module>' in text and 'index.py", line 2, in f' in text
    assert text.endswith("ZeroDivisionError: division by zero")


def test_a_syntax_error_shows_only_where_it_is(tmp_path: Path) -> None:
    text = format_exception(_import_error(tmp_path, "x = 1\ndef broken(:\n"))
    assert "Traceback" not in text and "loader.py" not in text and "<frozen" not in text
    assert 'index.py", line 2' in text and text.endswith("SyntaxError: invalid syntax")


def test_a_chained_exception_keeps_the_users_frames_of_both(tmp_path: Path) -> None:
    source = "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('no k') from e\n"
    text = format_exception(_import_error(tmp_path, source))
    assert "KeyError: 'k'" in text and "ValueError: no k" in text and "loader.py" not in text


def test_an_error_raised_inside_edgecli_keeps_its_frames() -> None:
    try:
        import_entrypoint(Path("/nonexistent/dir/index.py"))
    except Exception as exc:
        text = format_exception(exc)
    assert "loader.py" in text  # no user frame at all: edgecli's own frames are the story


def test_a_handler_that_returns_no_response_is_the_users_mistake_in_one_line() -> None:
    text = format_exception(NotAResponse("handler() in index.py line 3 returned dict, not a Response"))
    assert text == "NotAResponse: handler() in index.py line 3 returned dict, not a Response"


def test_a_missing_module_names_the_package_the_interpreter_and_the_pip_line(tmp_path: Path) -> None:
    exc = _import_error(tmp_path, "import yaml_not_installed_here\n")
    message, error = boot_failure(exc)
    assert message.startswith("ModuleNotFoundError: No module named 'yaml_not_installed_here'; install ")
    assert f"{sys.executable} -m pip install yaml_not_installed_here" in message
    assert "loader.py" not in error and error.endswith("No module named 'yaml_not_installed_here'")
    pil = ModuleNotFoundError("No module named 'PIL'", name="PIL")
    assert (missing_module_hint(pil) or "").endswith("-m pip install Pillow")
    assert missing_module_hint(ValueError("x")) is None


def test_a_sync_handler_s_traceback_starts_at_its_own_frame_not_the_thread_hand_off(tmp_path: Path) -> None:
    import asyncio

    from edgecli.runtime.loader import handler_app

    entry = tmp_path / "index.py"
    entry.write_text("def handler(req):\n    raise RuntimeError('sync boom')\n")
    app = handler_app(import_entrypoint(entry).handler)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def call() -> BaseException:
        try:
            await app(scope, None, None)
        except RuntimeError as exc:
            return exc
        raise AssertionError("the handler returned")

    text = format_exception(asyncio.run(call()))
    assert "threads.py" not in text and "concurrent" not in text and "loader.py" not in text, text
    assert text.splitlines()[1].endswith('index.py", line 2, in handler'), text
