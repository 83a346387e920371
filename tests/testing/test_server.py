"""EdgeServer used directly, as a script would: start-up edge cases and argument checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgecli import listening
from edgecli.testing import EdgeServer, EdgeServerError

MakeProject = Callable[..., Path]
pytestmark = pytest.mark.timeout(90)
CONFIG = "[edge_runtime]\ngraceful_exit_timeout_sec = 1\n\n[functions.hello]\nverify_jwt = false\n"


def test_serve_takes_the_port_the_system_picks_and_each_server_its_own(
    make_project: MakeProject, tmp_path: Path
) -> None:
    # `--port 0`: no port is chosen ahead of serve's binding it, so no other process can take it first.
    project = make_project(CONFIG, ["hello"])
    with (
        EdgeServer(project, state_dir=tmp_path / "a") as a,
        EdgeServer(project, state_dir=tmp_path / "b") as b,
    ):
        assert a.url != b.url and a.url.startswith("http://127.0.0.1:") and not a.url.endswith(":0")
        assert {here.url for here in listening.running(tmp_path / "a")} == {a.url}
        assert a.invoke("hello").json() == b.invoke("hello").json() == {"message": "Hello!"}


def test_arguments_and_a_server_not_started(make_project: MakeProject, tmp_path: Path) -> None:
    edge = EdgeServer(make_project(CONFIG, ["hello"]), state_dir=tmp_path / "state")
    with pytest.raises(EdgeServerError, match="not running"):
        edge.invoke("hello")
    with pytest.raises(ValueError, match="role='admin'"):
        edge.invoke("hello", role="admin")  # type: ignore[arg-type]
    assert edge.anon_key != edge.service_role_key and edge.anon_key.count(".") == 2
    assert not (tmp_path / "state").exists()  # nothing started, nothing written
