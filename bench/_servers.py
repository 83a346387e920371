"""Server processes for the serving benchmark: start, wait until they answer, measure, stop.

Every server runs in its own session (the terminal's Ctrl-C reaches only the benchmark, which then stops
them in order) and with a parent-death signal, so even a SIGKILLed benchmark leaves nothing running.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

FORKSERVER_MODULE = "edgecli.runtime.forkserver"
STORE_MODULE = "edgecli.store.writer"
KEEPER = "edgecli-keeper"  # the process between the fork server and each worker
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_benchmark() -> None:
    # Runs in the child between fork and exec. SIGTERM, not SIGKILL: serve then drains and takes its
    # fork server and workers down with it.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class CpuSample:
    host: float  # seconds of CPU used by the server process itself
    workers: float  # the fork server and every worker it forked, reaped ones included
    store: float  # the event store's process


@dataclass(frozen=True)
class MemorySample:
    role: str
    pid: int
    rss_mb: float
    uss_mb: float  # pages only this process holds: what it really costs next to its siblings


@dataclass
class Server:
    name: str
    cmd: list[str]
    url: str
    log_path: Path
    env: dict[str, str] | None = None  # None: the benchmark's own environment
    events_db: Path | None = None  # edgecli's event store, where boots are counted
    headers: dict[str, str] = field(default_factory=dict)  # sent with each request (Authorization)
    proc: subprocess.Popen[bytes] | None = None
    # psutil.Process objects, not bare pids: is_running() then also checks the start time, so a pid the
    # system has since reused for someone else's process is never mistaken for ours.
    known: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Not the checkout: `python -m` puts the working directory first on sys.path, which
                # would shadow PYTHONPATH (see bench_serve.py --also).
                cwd=self.log_path.parent,
                start_new_session=True,
                preexec_fn=_die_with_benchmark,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the URL until it answers 200; fail with the server's log if it exits or times out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                request = urllib.request.Request(self.url, headers=self.headers)
                with urllib.request.urlopen(request, timeout=2) as resp:
                    if resp.status == 200:
                        self.family()
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not answer {self.url} in {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- measuring -------------------------------------------------------------------------------------

    def family(self) -> list[psutil.Process]:
        """The server and every process under it that is alive now (remembered for the final check)."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for proc in procs:
            self.known.setdefault(proc.pid, proc)
        return procs

    def forkserver(self) -> psutil.Process | None:
        return self._child_running(FORKSERVER_MODULE)

    def store(self) -> psutil.Process | None:
        return self._child_running(STORE_MODULE)

    def _child_running(self, module: str) -> psutil.Process | None:
        for proc in self.family()[1:]:
            if module in " ".join(_cmdline(proc)):
                return proc
        return None

    def cpu(self) -> CpuSample:
        """Summed over the whole family: with replicas (`serve --workers N`, `uvicorn --workers N`) the
        server's part is every serving process, and each replica has a fork server of its own."""
        host = workers = store = 0.0
        family = self.family()
        forkservers = [p for p in family if FORKSERVER_MODULE in " ".join(_cmdline(p))]
        # A fork server's children_* hold the keepers already reaped (every oneshot worker); below it, the
        # keepers, their workers and what those started. A keeper outlives its workers: the ones it reaped
        # are in its children_* times.
        below = {p.pid for f in forkservers for p in _descendants(f)}
        for proc in family:
            if proc in forkservers:
                workers += _cpu(proc, children=True)
            elif proc.pid in below:
                workers += _cpu(proc, children=_name(proc) == KEEPER)
            elif STORE_MODULE in " ".join(_cmdline(proc)):
                store += _cpu(proc, children=False)
            else:
                host += _cpu(proc, children=False)
        return CpuSample(host, workers, store)

    def memory(self) -> list[MemorySample]:
        samples = []
        forkserver, store = self.forkserver(), self.store()
        for proc in self.family():
            if forkserver is not None and proc.pid == forkserver.pid:
                role = "fork server"
            elif store is not None and proc.pid == store.pid:
                role = "event store"
            elif _name(proc) == KEEPER:
                role = "keeper"
            elif forkserver is not None and proc.pid in {c.pid for c in _descendants(forkserver)}:
                role = "worker"
            else:
                role = "server"
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            samples.append(MemorySample(role, proc.pid, info.rss / 2**20, info.uss / 2**20))
        return samples

    # -- stopping --------------------------------------------------------------------------------------

    def signal_stop(self) -> None:
        self.family()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish_stop(self, timeout: float = 20.0) -> list[str]:
        """Wait for the server after signal_stop; kill whatever is left. Returns what had to be killed."""
        if self.proc is None:
            return []
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return kill_leftovers(self.known.values())


def stop_all(servers: Iterable[Server]) -> list[str]:
    """Stop every server at once (they drain in parallel), then make sure none of their processes is left."""
    servers = list(servers)
    for server in servers:
        server.signal_stop()
    killed: list[str] = []
    for server in servers:
        killed += server.finish_stop()
    return killed


def kill_leftovers(procs: Iterable[psutil.Process], grace: float = 3.0) -> list[str]:
    """Give lingering processes `grace` seconds to exit on their own, then SIGKILL them."""
    procs = list(procs)
    deadline = time.monotonic() + grace
    alive = _alive(procs)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _alive(procs)
    killed = []
    for proc in alive:
        killed.append(f"{proc.pid} {' '.join(_cmdline(proc))}")
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return killed


def settle(
    servers: Iterable[Server], idle_cpu: float = 0.05, window: float = 0.25, timeout: float = 10.0
) -> None:
    """Wait until every server is idle (under `idle_cpu` of a core over `window` seconds).

    After a round a server may still be writing its log and event store (the store's process runs at
    idle priority, so it catches up after a load), or reaping workers; the next round must not pay for
    that. The test is per server: an idle edgecli serve still uses ~2 % of a core (its limit monitor and
    file watcher), and a sum over many servers would never look idle.
    """
    servers = list(servers)
    deadline = time.monotonic() + timeout
    before = [_total(s.cpu()) for s in servers]
    while time.monotonic() < deadline:
        time.sleep(window)
        after = [_total(s.cpu()) for s in servers]
        if all(b - a < idle_cpu * window for a, b in zip(before, after, strict=True)):
            return
        before = after


def _total(sample: CpuSample) -> float:
    return sample.host + sample.workers + sample.store


def _cpu(proc: psutil.Process, children: bool) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive
