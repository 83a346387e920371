"""The image's own steps, run without docker: the generated Dockerfile's install steps in a fresh
virtualenv, then its ENTRYPOINT and HEALTHCHECK, prove that the image's command serves the repository's
demo project. edgecli is installed from this repository (the Dockerfile's EDGECLI_PACKAGE build
argument), as `docker build --build-arg EDGECLI_PACKAGE=...` would."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import venv
from functools import partial
from pathlib import Path

import httpx
import psutil
import pytest
from dockerfile_parse import DockerfileParser
from serving import free_port, wait_until

from edgecli.config import DEFAULT_JWT_SECRET
from edgecli.console import Output
from edgecli.deploy import build
from edgecli.host.auth import make_key

REPO = Path(__file__).resolve().parents[2]
SKIPPED = ("useradd", "chown")  # need root and change the machine: checked by test_build, not run here


def copy_demo(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".temp", "__pycache__", ".env")
    shutil.copytree(REPO / "supabase", dest / "supabase", ignore=ignore)
    return dest


class Image:
    """A directory standing in for the image's filesystem: absolute paths of the Dockerfile land in it."""

    def __init__(self, root: Path, context: Path) -> None:
        self.root = root
        self.context = context
        self.env: dict[str, str] = {}
        self.args: dict[str, str] = {"EDGECLI_PACKAGE": str(REPO)}
        self.workdir = root
        self.venv = root / "venv"
        venv.create(self.venv, with_pip=True)

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/") if path.startswith("/") else self.workdir / path

    def environ(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EDGECLI_", "PIP_", "VIRTUAL_ENV"))}
        base.update(self.env)
        # pip's own cache stays on: the image's PIP_NO_CACHE_DIR would fetch every package again.
        base.pop("PIP_NO_CACHE_DIR", None)
        base["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{base.get('PATH', '')}"
        return base

    def step(self, instruction: str, value: str) -> None:
        if instruction == "ENV":
            for pair in shlex.split(value):
                key, _, val = pair.partition("=")
                self.env[key] = val
        elif instruction == "ARG":
            key, _, default = value.partition("=")
            self.args.setdefault(key, shlex.split(default)[0] if default else "")
        elif instruction == "WORKDIR":
            self.workdir = self.path(value)
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            source, target = shlex.split(value)
            self.copy(self.context / source, self.path(target))
        elif instruction == "RUN":
            self.run(value)

    def copy(self, source: Path, target: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)

    def run(self, line: str) -> None:
        parts = [part for part in line.split(" && ") if not part.startswith(SKIPPED)]
        if not parts:
            return
        command = " && ".join(parts).replace(" /tmp/", f" {self.root}/tmp/")
        env = {**self.environ(), **self.args}
        done = subprocess.run(
            ["sh", "-c", command], cwd=self.workdir, env=env, capture_output=True, text=True, timeout=400
        )
        assert done.returncode == 0, f"RUN {command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.mark.timeout(600)
def test_the_images_command_serves_the_demo_project(tmp_path: Path) -> None:
    context = copy_demo(tmp_path / "context")
    build.build(context, Output(), os.environ, which=lambda _: None)
    parser = DockerfileParser(path=str(context / "Dockerfile"))
    image = Image(tmp_path / "image", context)
    entrypoint: list[str] = []
    healthcheck = ""
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "ENTRYPOINT":
            entrypoint = json.loads(value)
        elif kind == "HEALTHCHECK":
            healthcheck = value[value.index("CMD") + 3 :].strip()
        else:
            image.step(kind, value)
    assert entrypoint == ["edgecli", "serve", "--prod"]
    installed = image.venv / "bin" / "edgecli"
    assert installed.is_file()
    proc, env, family = _serve_on_a_free_port([str(installed), *entrypoint[1:]], image)
    try:
        base = f"http://127.0.0.1:{env['PORT']}"
        check = subprocess.run(["sh", "-c", _exec_form(healthcheck)], env=env, timeout=30, check=False)
        assert check.returncode == 0  # the HEALTHCHECK command, as docker would run it
        anon = make_key(DEFAULT_JWT_SECRET, "anon")
        r = httpx.post(
            f"{base}/functions/v1/hello",
            json={"name": "image"},
            headers={"Authorization": f"Bearer {anon}"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json() == {"message": "Hello image!"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    for line in out.decode().splitlines():
        json.loads(line)  # stdout: JSON records only
    wait_until(
        lambda: not [p for p in family if psutil.pid_exists(p) and _alive(p)], 10, what="no process left"
    )


def _serve_on_a_free_port(
    cmd: list[str], image: Image, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], dict[str, str], set[int]]:
    """The image's command, healthy on $PORT. A port is free only until another process takes it; then
    serve says that it cannot listen there and exits, and another port is tried."""
    for _ in range(attempts):
        env = {**image.environ(), "PORT": str(free_port())}
        proc = subprocess.Popen(
            cmd, cwd=image.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        family: set[int] = {proc.pid}
        url = f"http://127.0.0.1:{env['PORT']}/_internal/health"
        wait_until(partial(_healthy, proc, family, url), 60, interval=0.1, what="the image's server")
        if proc.poll() is None:
            return proc, env, family
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "cannot listen on" in stderr, f"the image's server exited with {proc.returncode}:\n{stderr}"
    raise AssertionError(f"no free port for the image's server after {attempts} tries")


def _healthy(proc: subprocess.Popen[bytes], family: set[int], url: str) -> bool:
    """Whether the server reports healthy (or has exited, saying why on stderr); notes its processes."""
    if proc.poll() is not None:
        return True
    family.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _exec_form(value: str) -> str:
    """A Dockerfile exec-form command (a JSON array) as a shell line."""
    return shlex.join(json.loads(value))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
