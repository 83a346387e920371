"""Real-process test support: a project on disk and a real `edgecli serve` on a free port.

    with Served(make_project(tmp_path, {"hello": HELLO})) as srv:
        r = srv.post("hello", json={"name": "x"})
        srv.wait_event(lambda e: e["kind"] == "task_end")

`Served` runs serve with `--json`, so every event is a JSON line in its output file; `events()` parses
them. serve listens on `--port 0` (a port the system picks as it binds, so no other process can take it
first) and `Served` learns which from the record serve leaves in its state directory (edgecli/listening.py).
On exit it stops serve (SIGINT) and asserts that serve and every process it started are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from edgecli.events import Event
from edgecli.store.reader import EventQuery, EventReader
from edgecli.testing.process import alive as _alive

PLAIN_ENV = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}  # plain output, whatever the terminal
DEFAULT_CONFIG = """\
[api]
port = 54321

[edge_runtime]
policy = "per_worker"
"""


def run_cli(project: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`edgecli ARGS` run in `project`, its output plain text."""
    return subprocess.run(
        [sys.executable, "-m", "edgecli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=PLAIN_ENV,
    )


@contextlib.contextmanager
def following_logs(project: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`edgecli logs -f --json ARGS` in `project`, and the lines it printed so far (a thread reads
    them). It does not outlive the block."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecli", "logs", "-f", "--json", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        text=True,
        env=PLAIN_ENV,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def rows(*events: Event) -> bytes:
    """Events as the store process reads them from serve: their wire rows, one a line."""
    return b"".join(event.to_row_json() + b"\n" for event in events)


def stored_events(path: Path) -> list[Event]:
    """Every event in the store at `path`, oldest first, read the way `edgecli logs` reads them."""
    with EventReader(path) as reader:
        return [event for _, event in reader.all(EventQuery())]


# Below Linux's ephemeral range (32768-60999 by default), where no bind to port 0 lands: a serve of a
# test running alongside, which listens on port 0, never takes the port another test was just given.
FIXED_PORTS = range(20000, 32000)


def free_port() -> int:
    """A port free at this moment, for what cannot listen on port 0 and say where (serve can, see
    Served). Another process may still bind it first, but not by asking for any free port."""
    for _ in range(200):
        port = random.choice(FIXED_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FIXED_PORTS}")


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on which connections are refused for the whole block: it is bound, never listened on, and
    no other process can bind it meanwhile (unlike a port that was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def make_project(root: Path, functions: dict[str, str], config: str = DEFAULT_CONFIG) -> Path:
    """Write supabase/config.toml and supabase/functions/<name>/index.py; returns the project dir."""
    supabase = root / "supabase"
    (supabase / "functions").mkdir(parents=True, exist_ok=True)
    (supabase / "config.toml").write_text(textwrap.dedent(config))
    for name, code in functions.items():
        write_function(root, name, code)
    return root


def write_function(root: Path, name: str, code: str) -> Path:
    path = root / "supabase" / "functions" / name / "index.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def replace_function(root: Path, name: str, code: str) -> Path:
    """Like write_function, but atomic (written beside the project, then renamed into place), as many
    editors save: a watcher never sees the file empty or half written, which an in-place write on a
    busy machine can show it as a separate change."""
    path = root / "supabase" / "functions" / name / "index.py"
    staged = root.parent / f".{root.name}-{name}-staged.py"
    staged.write_text(textwrap.dedent(code))
    os.replace(staged, path)
    return path


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


class Served:
    def __init__(
        self,
        project: Path,
        *args: str,
        env: dict[str, str] | None = None,
        verify_jwt: bool = False,
        json_output: bool = True,
        new_session: bool = False,
        separate_stderr: bool = False,
    ) -> None:
        self.project = project
        self.port = 0  # known once serve listens (start())
        self.base_url = ""
        number = next(_numbers)
        self.out_path = project / f"serve-{number}.out"
        # stderr in a file of its own (`err_path`), for tests of what stdout alone carries
        self.err_path = project / f"serve-{number}.err" if separate_stderr else None
        cmd = [sys.executable, "-m", "edgecli", "serve", "--workdir", str(project), "--port", "0"]
        if json_output:
            cmd.append("--json")
        if not verify_jwt:
            cmd.append("--no-verify-jwt")
        cmd.extend(args)
        self.cmd = cmd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(timeout=30)  # its base URL is set once serve listens
        self.known_pids: set[int] = set()
        self.new_session = new_session  # own process group, so a test can signal the whole group
        _started.append(self)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, ready: bool = True) -> Served:
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - closed in stop()
        err = open(self.err_path, "wb") if self.err_path else None  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._out,
            stderr=err or subprocess.STDOUT,
            env=self.env,
            start_new_session=self.new_session,
        )
        if err is not None:
            err.close()
        if ready:
            try:
                self.wait_listening()
            except BaseException:
                # No `with` block runs its exit for a start that failed: serve must not outlive the test.
                self.kill_all()
                self.client.close()
                self._out.close()
                raise
        return self

    def wait_listening(self, timeout: float = 60.0) -> int:
        """Wait until serve listens (its record says where): sets `port`, `base_url` and the client's URL."""
        if not self.port:
            try:
                url = wait_until(self._recorded_url, timeout, what="serve to listen")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- serve output ---\n{self.output()[-4000:]}") from None
            self.port = int(url.rsplit(":", 1)[1])
            self.base_url = url
            self.client.base_url = httpx.URL(url)
        return self.port

    def state_dir(self) -> Path:
        """Where serve keeps its state: EDGECLI_STATE_DIR if set for it, else the project's."""
        root = self.env.get("EDGECLI_STATE_DIR")
        return Path(root).resolve() if root else self.project / "supabase" / ".temp" / "edgecli"

    def _recorded_url(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args} exited with {self.proc.returncode}")  # output: the caller
        # serve's own record, or under `--prod --workers N` one of its replicas' (each records itself)
        pids = [self.proc.pid, *(p.pid for p in self.family()[1:])]
        for pid in pids:
            try:
                record = json.loads((self.state_dir() / f"serve-{pid}.json").read_text())
            except (OSError, ValueError):
                continue  # not listening yet (the record is written whole, once serve listens)
            return str(record["url"])
        return None

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def family(self) -> list[psutil.Process]:
        """serve and every process under it (fork server, workers) that is alive now."""
        assert self.proc is not None
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.known_pids.update(p.pid for p in procs)
        return procs

    def worker_pids(self) -> set[int]:
        """Pids of the live workers: each its keeper's child that runs the worker (a fork of the fork
        server, or Deno), not an orphan the keeper adopted."""
        pids: set[int] = set()
        for proc in self.family():
            try:
                if proc.name() != "edgecli-keeper":
                    continue
                for child in proc.children():
                    line = " ".join(_cmdline(child))
                    if child.status() != psutil.STATUS_ZOMBIE and (
                        "edgecli.runtime.forkserver" in line or "deno" in line
                    ):
                        pids.add(child.pid)
            except psutil.Error:
                pass
        return pids

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0, group: bool = False) -> int:
        """Stop serve with `sig` (to its whole process group with `group`), wait, assert nothing is left."""
        assert self.proc is not None
        self.family()
        if self.proc.poll() is None:
            if group:
                assert self.new_session, "group signals need Served(..., new_session=True)"
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise AssertionError(
                    f"serve did not exit within {timeout} s after {sig}:\n{self.output()}"
                ) from None
        self.client.close()
        self._out.close()
        self.assert_no_leftovers()
        return self.proc.returncode

    def kill_all(self) -> None:
        """serve and every process under it, at once (for a serve that cannot be stopped in order)."""
        for proc in self.family():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        assert self.proc is not None
        self.proc.wait(5)

    def assert_no_leftovers(self, timeout: float = 5.0) -> None:
        def gone() -> bool:
            return not [p for p in _alive(self.known_pids)]

        try:
            wait_until(gone, timeout, what="every process of serve to exit")
        except AssertionError:
            left = [(p.pid, _cmdline(p)) for p in _alive(self.known_pids)]
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError(f"processes left behind: {left}") from None

    # -- requests --------------------------------------------------------------------------------------

    def url(self, name: str, path: str = "") -> str:
        return f"/functions/v1/{name}{path}"

    def get(self, name: str, path: str = "", **kw: Any) -> httpx.Response:
        return self.client.get(self.url(name, path), **kw)

    def post(self, name: str, path: str = "", **kw: Any) -> httpx.Response:
        return self.client.post(self.url(name, path), **kw)

    def request(self, method: str, name: str, path: str = "", **kw: Any) -> httpx.Response:
        return self.client.request(method, self.url(name, path), **kw)

    # -- output ----------------------------------------------------------------------------------------

    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, **match: Any) -> list[dict[str, Any]]:
        """Every JSON event serve printed so far, optionally only those whose fields equal `match`."""
        found = []
        for line in self.output().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if all(record.get(k) == v for k, v in match.items()):
                found.append(record)
        return found

    def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for record in self.events(**match):
                if predicate is None or predicate(record):
                    return record
            return None

        return wait_until(
            find, timeout, what=f"an event {match}\n--- serve output ---\n{self.output()[-4000:]}"
        )


_started: list[Served] = []
_numbers = itertools.count(1)  # names each Served's output file


@atexit.register
def _kill_leftovers() -> None:
    """A test that failed before stop() must not leave serve running after pytest exits."""
    for srv in _started:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill_all()


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []
