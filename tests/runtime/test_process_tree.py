"""Real-process: what a function starts inherits default signals, stays in its worker's tree, and goes
when the worker goes, when serve stops, and when serve or the fork server is killed outright."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from serving import Served, make_project, wait_until

SPAWN = """
import os, subprocess
from starlette.responses import JSONResponse

async def handler(req):
    child = subprocess.Popen(["sleep", "300"])
    # A grandchild that leaves the worker's process group and is orphaned at once (a daemon).
    subprocess.run(["sh", "-c", "setsid sleep 301 & exit 0"])
    status = dict(line.split(":\\t", 1) for line in open(f"/proc/{child.pid}/status").read().splitlines())
    environ = open("/proc/self/environ", "rb").read()
    return JSONResponse({
        "child": child.pid,
        "sig_ignored": int(status["SigIgn"], 16),
        "sig_blocked": int(status["SigBlk"], 16),
        "worker_pgid": os.getpgid(0),
        "child_pgid": os.getpgid(child.pid),
        "worker": os.getpid(),
        "secret_in_environ": b"HOST_ONLY_SECRET" in environ,
        "secret_in_os_environ": "HOST_ONLY_SECRET" in os.environ,
    })
"""

EXIT = """
import os
from starlette.responses import PlainTextResponse

async def handler(req):
    os._exit(0)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, {"spawn": SPAWN})


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def spawned(srv: Served) -> tuple[dict, set[int]]:
    """Call the function; the sleepers it started (pids), seen under serve."""
    info = srv.get("spawn").json()
    wait_until(lambda: len(tree_sleepers(srv)) == 2, 10, what="both sleepers under the worker")
    return info, {p.pid for p in tree_sleepers(srv)}


def tree_sleepers(srv: Served) -> list[psutil.Process]:
    return [p for p in srv.family() if cmdline(p) in (["sleep", "300"], ["sleep", "301"])]


def alive(pids: set[int]) -> list[int]:
    return [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.timeout(60)
def test_children_get_default_signals_their_own_group_and_no_host_secrets(project: Path) -> None:
    with Served(project, env={"HOST_ONLY_SECRET": "s3cr3t"}) as srv:
        info, pids = spawned(srv)
        assert info["sig_ignored"] & (1 << (signal.SIGINT - 1)) == 0
        assert info["sig_ignored"] & (1 << (signal.SIGTERM - 1)) == 0
        assert info["sig_blocked"] == 0
        # The worker leads its own group, and its child is in it: a terminal's Ctrl-C reaches serve only.
        assert info["worker_pgid"] == info["worker"] == info["child_pgid"]
        assert info["worker_pgid"] != os.getpgid(srv.proc.pid)
        assert not info["secret_in_environ"] and not info["secret_in_os_environ"]
        # The daemonised grandchild was orphaned, and is still in the worker's tree: its keeper's.
        keeper = psutil.Process(info["worker"]).ppid()
        assert psutil.Process(keeper).name() == "edgecli-keeper"
        assert psutil.Process(info["worker"]).name() != "edgecli-keeper"  # named as before
        assert {psutil.Process(pid).ppid() for pid in pids} == {info["worker"], keeper}
    assert not alive(pids)  # Served.stop asserted the same for everything under serve


@pytest.mark.timeout(60)
def test_what_a_worker_started_goes_when_the_worker_goes(project: Path, tmp_path: Path) -> None:
    with Served(project) as srv:
        info, pids = spawned(srv)
        os.kill(info["worker"], signal.SIGKILL)  # the worker alone, as a limit kills it
        wait_until(lambda: not alive(pids), 10, what="the worker's children to be killed with it")
        spawned(srv)  # a new worker serves; serve is fine


@pytest.mark.timeout(60)
@pytest.mark.parametrize("victim", ["serve", "forkserver"])
def test_what_workers_started_goes_when_serve_or_the_fork_server_is_killed(
    project: Path, victim: str
) -> None:
    srv = Served(project).start()
    try:
        _, pids = spawned(srv)
        family = srv.family()
        if victim == "serve":
            os.kill(srv.proc.pid, signal.SIGKILL)
        else:
            forkserver = next(
                p for p in family if p.ppid() == srv.proc.pid and "forkserver" in " ".join(cmdline(p))
            )
            os.kill(forkserver.pid, signal.SIGKILL)
        # Even the grandchild that left the worker's session: its keeper kills the whole tree.
        wait_until(lambda: not alive(pids), 10, what=f"the children to die with the {victim}")
        if victim == "forkserver":
            wait_until(lambda: srv.get("spawn").status_code == 200, 15, what="a new fork server")
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)
        if srv.proc.poll() is None:
            srv.stop()
        else:
            srv.client.close()
            srv.assert_no_leftovers()


ORPHANS = """
import asyncio, subprocess
from starlette.responses import JSONResponse

async def handler(req):
    # An orphan that ends soon after its parent (a daemonising shell), and a child of the function's
    # own that ends before the function waits for it: its exit status is the function's to collect.
    orphan = subprocess.run(["sh", "-c", "sleep 0.2 & echo $!"], capture_output=True, text=True).stdout
    own = subprocess.Popen(["sh", "-c", "exit 7"])
    await asyncio.sleep(1.0)
    return JSONResponse({"orphan": int(orphan), "own_status": own.wait()})
"""


@pytest.mark.timeout(60)
def test_orphans_are_reaped_when_they_end_and_the_functions_own_children_are_left_alone(
    tmp_path: Path,
) -> None:
    with Served(make_project(tmp_path, {"orphans": ORPHANS})) as srv:
        info = srv.get("orphans").json()
        assert info["own_status"] == 7  # nobody reaped it before the function's wait()
        # Not left as a zombie until the worker exits: the worker still runs.
        wait_until(lambda: not psutil.pid_exists(info["orphan"]), 10, what="the ended orphan to be reaped")
        assert srv.worker_pids()


WHO = """
import os
from starlette.responses import JSONResponse

async def handler(req):
    return JSONResponse({"worker": os.getpid(), "keeper": os.getppid()})
"""


@pytest.mark.timeout(60)
def test_a_keeper_takes_the_next_worker_once_its_last_one_is_gone(tmp_path: Path) -> None:
    config = '[edge_runtime]\npolicy = "oneshot"\n'
    with Served(make_project(tmp_path, {"who": WHO}, config)) as srv:
        seen = [srv.get("who").json() for _ in range(10)]
        assert len({s["worker"] for s in seen}) == 10  # a fresh worker for every request
        # A few keepers in turn (one forks the spare while another's worker drains), not one each.
        assert len({s["keeper"] for s in seen}) <= 5
