"""Where a running serve listens: the record it leaves in the project, and `invoke` finding it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

from edgecli import listening
from edgecli.config import Config
from edgecli.events import Event

pytestmark = pytest.mark.timeout(60)

HELLO = """
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({"hello": "there"})

serve(handler)
"""


def invoke(project: Path, name: str) -> subprocess.CompletedProcess[str]:
    """`edgecli invoke NAME` in `project`, as a user runs it: no port given, the serve is found."""
    return subprocess.run(
        [sys.executable, "-m", "edgecli", "invoke", name],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_newest_live_serve_of_a_function_is_the_one_called(tmp_path: Path) -> None:
    state = tmp_path / "state"
    listening.record(state, listening.Listening("http://127.0.0.1:1001", os.getpid(), ("a",), started=1.0))
    listening.record(state, listening.Listening("http://127.0.0.1:1002", os.getppid(), ("b",)))
    listening.record(state, listening.Listening("http://127.0.0.1:1003", _dead_pid(), ("a", "b")))
    assert listening.url_for(state, "a") == "http://127.0.0.1:1001"
    assert listening.url_for(state, "b") == "http://127.0.0.1:1002"
    assert listening.url_for(state, "c") == "http://127.0.0.1:1002"  # none serves it: the newest serve
    assert listening.url_for(tmp_path / "nothing") is None


def test_a_record_that_is_not_ours_is_ignored(tmp_path: Path) -> None:
    tmp_path.joinpath("serve-1.json").write_text("{not json")
    tmp_path.joinpath("serve-2.json").write_text('{"url": "http://x"}')
    assert listening.running(tmp_path) == []


def test_each_serve_is_listed_once_beside_its_status_record(tmp_path: Path) -> None:
    listening.record(tmp_path, listening.Listening("http://127.0.0.1:1001", os.getpid(), ("a",)))
    # The status server's record, in the same folder, also names serve's pid and url.
    status = f'{{"pid": {os.getpid()}, "url": "http://127.0.0.1:1001", "status": "http://127.0.0.1:9/"}}'
    tmp_path.joinpath("serve-status.json").write_text(status)
    assert [s.url for s in listening.running(tmp_path)] == ["http://127.0.0.1:1001"]


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:9"), ("0.0.0.0", "http://127.0.0.1:9"), ("::", "http://[::1]:9")],
)
def test_a_wildcard_address_is_called_on_this_machine(host: str, url: str) -> None:
    assert listening.client_url(host, 9) == url


def test_invoke_finds_a_serve_on_another_port_and_the_record_goes_with_it(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO})  # config.toml says 54321; serve runs elsewhere
    state = Config(project_dir=project).state_dir
    with Served(project) as srv:
        # The port answers from the moment it is bound; the record follows right after.
        wait_until(lambda: listening.url_for(state, "hello") == srv.base_url, what="serve's record")
        result = invoke(project, "hello")
        assert result.returncode == 0, result.stderr
        assert '"hello": "there"' in result.stdout
    wait_until(lambda: not list(state.glob("serve-*.json")), what="serve's record to be removed")


def test_a_reload_that_changes_the_functions_writes_the_record_again_and_keeps_its_start(
    tmp_path: Path,
) -> None:
    served = ("a",)
    kept = listening.Kept(
        tmp_path, listening.Listening("http://127.0.0.1:1001", os.getpid(), served, 5.0), lambda: served
    )
    listening.record(tmp_path, listening.Listening("http://127.0.0.1:1002", os.getppid(), ("b",), 9.0))
    assert listening.url_for(tmp_path, "c") == "http://127.0.0.1:1002"  # none serves c: the newest
    served = ("a", "c")
    kept.emit(Event("log", "not a reload"))
    assert listening.url_for(tmp_path, "c") == "http://127.0.0.1:1002"
    kept.emit(Event("reload", "reload: c added"))
    assert listening.url_for(tmp_path, "c") == "http://127.0.0.1:1001"
    assert listening.url_for(tmp_path) == "http://127.0.0.1:1002"  # still the newest, though written last
    kept.forget()
    kept.emit(Event("reload", "after serve stopped"))
    assert [here.url for here in listening.running(tmp_path)] == ["http://127.0.0.1:1002"]


@pytest.mark.timeout(120)
def test_invoke_of_a_function_added_while_two_serves_run_calls_the_one_serving_it(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO})
    state = Config(project_dir=project).state_dir
    with Served(project) as every, Served(project, "hello") as only_hello:
        wait_until(lambda: len(listening.running(state)) == 2, what="both serves' records")
        assert listening.running(state)[0].url == only_hello.base_url  # the newest, the fallback
        added = project / "supabase" / "functions" / "added"
        added.mkdir()
        (added / "index.py").write_text(HELLO.replace("there", "added"))
        wait_until(lambda: listening.url_for(state, "added") == every.base_url, timeout=30, what="the reload")
        result = invoke(project, "added")
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"hello": "added"' in result.stdout
