"""The health answer of `serve --prod`, from the pools' state and the boot events seen (no processes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecli.events import Event
from edgecli.host.connection import BootError
from edgecli.host.health import Health

pytestmark = pytest.mark.timeout(10)


class FakePool:
    def __init__(self, broken: BootError | None = None) -> None:
        self.broken = broken


def answer(health: Health) -> tuple[int, Any]:
    status, body = health.answer()
    return status, json.loads(body)


def test_ready_once_every_function_has_booted() -> None:
    pools: dict[str, Any] = {"a": FakePool(), "b": FakePool()}
    health = Health(pools)
    assert answer(health) == (503, {"status": "unavailable", "failing": {"a": "booting", "b": "booting"}})
    health.emit(Event(kind="boot", function="a", message="booted"))
    health.emit(Event(kind="log", function="b", message="not a boot"))
    assert answer(health) == (503, {"status": "unavailable", "failing": {"b": "booting"}})
    health.emit(Event(kind="boot", function="b", message="booted"))
    assert answer(health) == (200, {"status": "ok", "functions": ["a", "b"]})


def test_a_function_that_cannot_boot_is_named_without_its_traceback() -> None:
    pools: dict[str, Any] = {"ok": FakePool(), "bad": FakePool(BootError("boom", "Traceback...secret"))}
    health = Health(pools)
    health.emit(Event(kind="boot", function="ok", message="booted"))
    status, body = health.answer()
    assert status == 503 and json.loads(body)["failing"] == {"bad": "boot_error"}
    assert b"secret" not in body
    pools["bad"].broken = BootError("no fork server", transient=True)
    assert answer(health)[1]["failing"] == {"bad": "unavailable"}
