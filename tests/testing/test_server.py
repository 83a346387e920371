"""EdgeServer used directly, as a script would: start-up edge cases and argument checks."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from serving import free_port

from edgecli.testing import EdgeServer, EdgeServerError
from edgecli.testing import server as server_module

MakeProject = Callable[..., Path]
pytestmark = pytest.mark.timeout(90)
CONFIG = "[edge_runtime]\ngraceful_exit_timeout_sec = 1\n\n[functions.hello]\nverify_jwt = false\n"


def test_a_port_taken_before_serve_binds_it_is_tried_again(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(server_module, "_free_port", lambda: next(ports))
        with EdgeServer(make_project(CONFIG, ["hello"])) as edge:
            assert edge.url != f"http://127.0.0.1:{taken.getsockname()[1]}"
            assert edge.invoke("hello").json() == {"message": "Hello!"}


def test_arguments_and_a_server_not_started(make_project: MakeProject, tmp_path: Path) -> None:
    edge = EdgeServer(make_project(CONFIG, ["hello"]), state_dir=tmp_path / "state")
    with pytest.raises(EdgeServerError, match="not running"):
        edge.invoke("hello")
    with pytest.raises(ValueError, match="role='admin'"):
        edge.invoke("hello", role="admin")  # type: ignore[arg-type]
    assert edge.anon_key != edge.service_role_key and edge.anon_key.count(".") == 2
    assert not (tmp_path / "state").exists()  # nothing started, nothing written
