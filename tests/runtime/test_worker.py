"""Pieces of the worker's start-up that can be checked in-process."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator

import pytest

from edgecli.runtime.worker import replace_environ

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def saved_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _c_getenv(name: str) -> str | None:
    """What the C library sees, which is what a subprocess or a C extension of the function gets."""
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    value = libc.getenv(name.encode())
    return None if value is None else value.decode()


@pytest.mark.usefixtures("saved_environ")
def test_replace_environ_leaves_exactly_the_given_variables() -> None:
    os.environ["EDGECLI_TEST_KEPT"] = "same"
    os.environ["EDGECLI_TEST_CHANGED"] = "old"
    os.environ["EDGECLI_TEST_DROPPED"] = "gone soon"
    wanted = {"EDGECLI_TEST_KEPT": "same", "EDGECLI_TEST_CHANGED": "new", "EDGECLI_TEST_ADDED": "added"}
    replace_environ(wanted)
    assert dict(os.environ) == wanted
    if sys.platform.startswith("linux"):
        assert _c_getenv("EDGECLI_TEST_CHANGED") == "new"
        assert _c_getenv("EDGECLI_TEST_ADDED") == "added"
        assert _c_getenv("EDGECLI_TEST_DROPPED") is None
        assert _c_getenv("PATH") is None
