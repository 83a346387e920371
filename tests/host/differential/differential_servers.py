"""The two servers of a differential test: bare uvicorn mounted at /functions/v1, and `edgecli serve`.

Both serve the same apps (differential_apps.py) from one project on disk. A `Target` is what a case
talks to: a base URL plus the path prefix under which the apps are reached, so that the same request
goes to `/<name>/...` on bare uvicorn (its root path is /functions/v1) and `/functions/v1/<name>/...`
on edgecli. Observations are compared after `normalize`, which replaces each server's own port.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from differential_apps import APPS, BARE
from serving import Served, free_port, listening, make_project, wait_until

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
    """`uvicorn bare:app --root-path /functions/v1` on a free port; on exit, stopped and reaped."""

    def __init__(self, project_dir: Path) -> None:
        self.port = free_port()
        functions = project_dir / "supabase" / "functions"
        self.out_path = project_dir / f"uvicorn-{self.port}.out"
        self.cmd = [
            sys.executable, "-m", "uvicorn", "bare:app", "--app-dir", str(functions), "--port",
            str(self.port), "--root-path", "/functions/v1", "--lifespan", "off", "--log-level", "warning",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareUvicorn:
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT)
        wait_until(self._listening, 20, what=f"uvicorn to listen on {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        return listening(self.proc, self.port, self.out_path.read_text)

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

    @property
    def target(self) -> Target:
        return Target("uvicorn", self.port, "")


def edgecli_target(srv: Served) -> Target:
    return Target("edgecli", srv.port, "/functions/v1")
