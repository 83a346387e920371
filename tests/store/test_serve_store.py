"""The store under a real `edgecli serve`: its process killed, its file deleted or damaged, its modes;
and what `logs` and `tasks` say about a store they cannot read."""

from __future__ import annotations

import signal
import sqlite3
import stat
from pathlib import Path

import psutil
import pytest
from serving import Served, following_logs, make_project, run_cli, stored_events, wait_until

from edgecli.events import Event
from edgecli.store.writer import StoreWriter

FUNCTION = """
from starlette.responses import PlainTextResponse

async def handler(req):
    print("said", req.query_params.get("n"))
    return PlainTextResponse("ok")
"""


def _store(project: Path) -> Path:
    return project / "supabase" / ".temp" / "edgecli" / "events.db"


def _said(project: Path) -> list[str]:
    return [e.message for e in stored_events(_store(project)) if e.message.startswith("said")]


def _store_process(srv: Served) -> psutil.Process:
    for proc in srv.family():
        if "edgecli.store.writer" in " ".join(proc.cmdline()):
            return proc
    raise AssertionError("no store process")


@pytest.mark.timeout(90)
def test_a_killed_store_process_is_started_again_and_nothing_after_is_lost(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"f": FUNCTION})
    with Served(project) as srv:
        assert srv.get("f", params={"n": "0"}).status_code == 200
        wait_until(lambda: _said(project) == ["said 0"], what="the first line in the store")
        first = _store_process(srv)
        first.kill()
        wait_until(lambda: _dead(first), what="the store process to die")  # serve has not reaped it yet
        for n in range(1, 30):
            assert srv.get("f", params={"n": str(n)}).status_code == 200
        wait_until(lambda: len(_said(project)) == 30, timeout=20, what="every later line in the store")
        assert _store_process(srv).pid != first.pid
    assert _said(project) == [f"said {n}" for n in range(30)]
    assert "the event store process stopped" in srv.output()


def _dead(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(90)
def test_a_store_deleted_while_serving_is_made_afresh_and_followed(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"f": FUNCTION})
    store = _store(project)
    with Served(project) as srv, following_logs(project, "-n", "1") as (follower, followed):
        wait_until(lambda: followed, timeout=30, what="`logs -f` to read the store")
        assert srv.get("f", params={"n": "old"}).status_code == 200
        wait_until(lambda: any("said old" in line for line in followed), what="`logs -f` to print it")
        store.unlink()  # its -wal and -shm are left behind
        assert srv.get("f", params={"n": "new"}).status_code == 200
        wait_until(lambda: store.exists() and _said(project) == ["said new"], what="a fresh store")
        # `logs -f` moved to the new file
        wait_until(lambda: any("said new" in line for line in followed), what="`logs -f` to follow")
        logs = run_cli(project, "logs")
        assert logs.returncode == 0 and "said new" in logs.stdout and "said old" not in logs.stdout
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0
    assert _said(project) == ["said new"]  # the old WAL was not replayed into the new file
    assert "was removed or replaced" in srv.output()


def test_the_store_is_the_users_only(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"f": FUNCTION})
    with Served(project) as srv:
        assert srv.get("f").status_code == 200
        wait_until(lambda: Path(f"{_store(project)}-wal").exists(), what="the store's WAL")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in _store(project).parent.glob("events.db*")}
        assert stat.S_IMODE(_store(project).parent.stat().st_mode) == 0o700
        assert modes == {"events.db": 0o600, "events.db-wal": 0o600, "events.db-shm": 0o600}


def test_logs_and_tasks_on_a_damaged_store_say_so_in_one_paragraph(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"f": FUNCTION})
    store = _store(project)
    writer = StoreWriter(store, 1_000_000, 1 << 30)
    events = [
        Event("task_start", "x" * 200, function="f", task=f"t{i}", fields={"name": "j"}) for i in range(5000)
    ]
    writer.write(b"".join(event.to_row_json() + b"\n" for event in events))
    writer.close()
    data = bytearray(store.read_bytes())
    for page in range(len(data) // 8192 * 4096, len(data), 4096):  # the second half's pages
        data[page : page + 300] = b"\xa5" * 300
    store.write_bytes(bytes(data))
    for args in (("logs", "-n", "1000000"), ("tasks",), ("tasks", "--json"), ("logs", "--function", "f")):
        result = run_cli(project, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and "Could not read the event store" in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_readers_meeting_an_older_store_say_so_and_serve_replaces_it(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"f": FUNCTION})
    store = _store(project)
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as conn:  # store format 3: a row per batch of events
        conn.execute(
            "CREATE TABLE event_batches (last INTEGER PRIMARY KEY, first INTEGER, stored REAL, rows TEXT)"
        )
        conn.execute("PRAGMA user_version = 3")
    for args in (("logs",), ("tasks",)):
        result = run_cli(project, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "store format 3" in result.stderr and "replaces it" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with Served(project) as srv:
        assert srv.get("f", params={"n": "1"}).status_code == 200
        wait_until(lambda: _said(project) == ["said 1"], what="the line in the new store")
