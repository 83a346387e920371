"""`edgecli build`: the Dockerfile and .dockerignore it writes, and how it runs docker (a stand-in
`docker` on PATH records what it was asked; the real one needs a daemon)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from deploy_helpers import deploy_project, run
from dockerfile_parse import DockerfileParser

pytestmark = pytest.mark.timeout(60)


def fake_docker(bin_dir: Path, status: int = 0) -> Path:
    """A `docker` that writes its arguments to docker-args.json beside itself and exits with `status`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker"
    record = bin_dir / "docker-args.json"
    script.write_text(
        f'#!/bin/sh\nprintf \'%s\\n\' "$@" > {record}\necho "docker says: building"\nexit {status}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return record


def instructions(project: Path) -> list[dict[str, str]]:
    parser = DockerfileParser(path=str(project / "Dockerfile"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def test_build_writes_the_dockerfile_and_runs_docker_build(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "project")
    record = fake_docker(tmp_path / "bin")
    result = run("build", "--tag", "shop:2", cwd=project, env={"PATH": str(tmp_path / "bin")})
    assert result.returncode == 0, result.stderr
    assert "docker says: building" in result.stdout
    assert record.read_text().split("\n")[:-1] == ["build", "--tag", "shop:2", str(project)]
    steps = instructions(project)
    kinds = [s["instruction"] for s in steps]
    assert steps[0]["instruction"] == "FROM" and steps[0]["value"] == "python:3.12-slim"
    values = {s["instruction"]: s["value"] for s in steps}  # the last of each kind
    assert values["USER"] == "edge"
    assert values["EXPOSE"] == "8080"
    assert values["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(values["ENTRYPOINT"]) == ["edgecli", "serve", "--prod"]
    assert "/_internal/health" in values["HEALTHCHECK"] and values["HEALTHCHECK"].count("CMD") == 1
    assert "PORT=8080" in " ".join(s["value"] for s in steps if s["instruction"] == "ENV")
    runs = [s["value"] for s in steps if s["instruction"] == "RUN"]
    assert runs[0] == 'pip install "$EDGECLI_PACKAGE"'
    # Each function's own dependencies, from the file serve installs them from (orders' requirements.txt,
    # mail's pyproject.toml), installed where serve looks for them: a container installs nothing at start.
    copies = [s["value"] for s in steps if s["instruction"] == "COPY"]
    orders, mail = "supabase/functions/orders/requirements.txt", "supabase/functions/mail/pyproject.toml"
    assert f"{orders} {orders}" in copies and f"{mail} {mail}" in copies
    assert f"python -m edgecli.host.deps {mail} {orders}" in runs  # in the order config.toml names them
    assert not any(r.startswith("pip install -r") for r in runs)  # nothing in the image's site-packages
    assert kinds.index("WORKDIR") < min(
        i for i, s in enumerate(steps) if s["value"].startswith("python -m edgecli.host.deps")
    )
    assert any(r.startswith("useradd") and "edge" in r for r in runs)
    # Nothing is installed as the server's user, and the code is copied before the user is switched to.
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k in ("RUN", "COPY"))
    assert "COPY supabase/ supabase/" in [f"{s['instruction']} {s['value']}" for s in steps]
    ignored = (project / ".dockerignore").read_text().splitlines()
    assert {"*", "!supabase/", "supabase/.temp/", "supabase/**/.env"} <= set(ignored)


def test_build_without_docker_prints_the_command(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "project")
    (tmp_path / "empty").mkdir()
    result = run("build", "--python", "3.13", cwd=project, env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr
    assert f"docker build --tag shop-functions:latest {project}" in result.stdout
    assert instructions(project)[0]["value"] == "python:3.13-slim"


def test_typescript_functions_get_edgecli_with_deno(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "project")
    (project / "supabase" / "functions" / "ts").mkdir()
    (project / "supabase" / "functions" / "ts" / "index.ts").write_text(
        "Deno.serve(() => new Response('ok'))\n"
    )
    assert run("build", cwd=project, env={"PATH": str(tmp_path)}).returncode == 0
    (arg,) = [s["value"] for s in instructions(project) if s["instruction"] == "ARG"]
    assert arg.startswith('EDGECLI_PACKAGE="edgecli[deno]==')


def test_a_failed_docker_build_is_a_failed_operation(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "project")
    fake_docker(tmp_path / "bin", status=3)
    result = run("build", cwd=project, env={"PATH": str(tmp_path / "bin")})
    assert result.returncode == 1
    assert result.stderr.startswith("error: `docker build --tag shop-functions:latest")
    assert "failed with status 3" in result.stderr and "Traceback" not in result.stderr
    assert (project / "Dockerfile").is_file()


def test_a_dockerfile_edgecli_did_not_write_is_kept_unless_forced(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "project")
    (project / "Dockerfile").write_text("FROM scratch\n")
    env = {"PATH": str(tmp_path)}
    result = run("build", cwd=project, env=env)
    assert result.returncode == 1 and "pass --force" in result.stderr
    assert (project / "Dockerfile").read_text() == "FROM scratch\n"
    assert run("build", "--force", cwd=project, env=env).returncode == 0
    assert run("build", cwd=project, env=env).returncode == 0  # ours now: written again
    assert instructions(project)[0]["value"] == "python:3.12-slim"


def test_a_bad_python_version_is_bad_usage(tmp_path: Path) -> None:
    result = run("build", "--python", "latest", cwd=deploy_project(tmp_path / "project"))
    assert result.returncode == 2
    assert "--python 'latest' is not a Python version" in result.stderr
    assert not (tmp_path / "project" / "Dockerfile").exists()
