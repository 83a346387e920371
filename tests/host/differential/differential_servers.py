"""The two servers of a differential test: bare uvicorn mounted at /functions/v1, and `edgecli serve`.

Both serve the same apps (differential_apps.py) from one project on disk. A `Target` is what a case
talks to: a base URL plus the path prefix under which the apps are reached, so that the same request
goes to `/<name>/...` on bare uvicorn (its root path is /functions/v1) and `/functions/v1/<name>/...`
on edgecli. Observations are compared after `normalize`, which replaces each server's own port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from differential_apps import APPS, BARE
from serving import Served, make_project, wait_until

CONFIG = """
[edge_runtime]
policy = "per_worker"
"""


@dataclass
class Target:
    name: str  # "uvicorn" or "edgecli"
    port: int
    prefix: str  # "" for bare uvicorn, "/functions/v1" for edgecli

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}{self.prefix}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{self.prefix}{path}"

    def normalize(self, observed: Any) -> Any:
        text = json.dumps(observed, sort_keys=True).replace(f":{self.port}", ":PORT")
        return json.loads(text)


def project(root: Path) -> Path:
    make_project(root, APPS, CONFIG)
    (root / "supabase" / "functions" / "bare.py").write_text(BARE)
    return root


class BareUvicorn:
    """`uvicorn bare:app --root-path /functions/v1` on a socket of ours (port 0, so no other process can
    take the port first) passed as `--fd`; on exit, stopped and reaped."""

    def __init__(self, project_dir: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        functions = project_dir / "supabase" / "functions"
        self.out_path = project_dir / f"uvicorn-{self.port}.out"
        self.cmd = [
            sys.executable, "-m", "uvicorn", "bare:app", "--app-dir", str(functions), "--fd",
            str(self.sock.fileno()), "--root-path", "/functions/v1", "--lifespan", "off", "--log-level",
            "warning",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareUvicorn:
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._out, stderr=subprocess.STDOUT, pass_fds=[self.sock.fileno()]
        )
        wait_until(self._answering, 30, what=f"uvicorn to answer on {self.port}")
        return self

    def _answering(self) -> bool:
        """The socket listens from the start (the kernel queues connections): an answer says uvicorn runs."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.out_path.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0)
        except httpx.TransportError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._out.close()
            self.sock.close()

    @property
    def target(self) -> Target:
        return Target("uvicorn", self.port, "")


def edgecli_target(srv: Served) -> Target:
    return Target("edgecli", srv.port, "/functions/v1")
