"""Real-process tests of `edgecli serve --prod --workers N`: N serve processes answer on one port, all
of them stop with serve (signalled, or killed outright), a replica that dies takes the others down, and
nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from serving import Served, make_project, wait_until

HELLO = """
import os
from starlette.responses import JSONResponse

async def handler(req):
    return JSONResponse({"serve": os.getppid()})
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"
max_parallelism = 1
"""


def replicas(srv: Served) -> list[psutil.Process]:
    """serve's replicas: its children running `edgecli serve` (their fork servers are their own)."""
    assert srv.proc is not None
    srv.family()  # remember every pid for the no-leftovers check
    found = []
    for child in psutil.Process(srv.proc.pid).children():
        try:
            if "serve" in child.cmdline():
                found.append(child)
        except psutil.Error:
            pass
    return found


def serve_pid_of_answer(srv: Served) -> int:
    """The replica that answered: the function reports its parent (its keeper), whose ancestor just
    below serve is the replica. A fresh connection each time, so that the socket's next accept decides."""
    assert srv.proc is not None
    with httpx.Client(base_url=srv.base_url, timeout=10) as client:
        r = client.get("/functions/v1/hello")
    assert r.status_code == 200, r.text
    proc = psutil.Process(int(r.json()["serve"]))
    while proc.ppid() != srv.proc.pid:
        proc = psutil.Process(proc.ppid())
    return proc.pid


def worker_pids(srv: Served) -> set[int]:
    """The workers of every replica (each below a keeper under its replica's fork server)."""
    return srv.worker_pids()


def started(tmp_path: Path, count: int) -> tuple[Served, list[psutil.Process]]:
    project = make_project(tmp_path, {"hello": HELLO}, CONFIG)
    srv = Served(project, "--prod", "--workers", str(count), json_output=False).start()
    wait_until(lambda: len(replicas(srv)) == count, 20, what=f"{count} replicas")
    # Each replica boots its worker at start: wait for all of them, so every pid is known.
    wait_until(lambda: len(worker_pids(srv)) == count, 30, what="a worker in each replica")
    return srv, replicas(srv)


@pytest.mark.timeout(90)
def test_each_of_the_replicas_answers_on_the_one_port_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    srv, procs = started(tmp_path, 2)
    try:
        assert len({p.pid for p in procs}) == 2
        # Stop one replica: the other must take the port's connections, and the other way round.
        for paused, serving in ((procs[0], procs[1]), (procs[1], procs[0])):
            paused.suspend()
            try:
                assert {serve_pid_of_answer(srv) for _ in range(3)} == {serving.pid}
            finally:
                paused.resume()
    finally:
        assert srv.stop(signal.SIGTERM) == 0  # and no process of any replica is left (Served.stop)


@pytest.mark.timeout(90)
def test_a_replica_that_dies_stops_the_others_and_serve_fails(tmp_path: Path) -> None:
    srv, procs = started(tmp_path, 2)
    assert srv.proc is not None
    procs[0].kill()
    try:
        srv.proc.wait(30)
    except subprocess.TimeoutExpired:
        srv.kill_all()
        raise AssertionError(f"serve did not exit when a replica died:\n{srv.output()}") from None
    assert srv.proc.returncode == 128 + signal.SIGKILL
    assert "exited with status -9" in srv.output()
    srv.stop()  # already exited: checks that nothing is left


@pytest.mark.timeout(90)
def test_replicas_and_their_workers_die_when_serve_is_killed_outright(tmp_path: Path) -> None:
    srv, _ = started(tmp_path, 2)
    assert srv.proc is not None
    srv.family()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    srv.stop()  # every replica, fork server and worker exits too


@pytest.mark.timeout(60)
def test_workers_without_prod_is_a_usage_error(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO}, CONFIG)
    cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(project), "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert "--workers 2" in done.stderr and "--prod" in done.stderr
    assert "Traceback" not in done.stderr
