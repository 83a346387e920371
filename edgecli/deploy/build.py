"""`edgecli build` and `edgecli export`: write the container files, run docker, print manifests."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from edgecli.console import Output
from edgecli.deploy import manifests, yaml
from edgecli.deploy.dockerfile import DOCKERIGNORE, MARK, render
from edgecli.deploy.spec import DeploySpec, load_spec
from edgecli.errors import EdgecliError, UsageError

PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
DEFAULT_PYTHON = "3.12"


def build(
    workdir: Path | None,
    output: Output,
    environ: Mapping[str, str],
    *,
    tag: str | None = None,
    python: str = DEFAULT_PYTHON,
    force: bool = False,
    which: Callable[[str], str | None] = shutil.which,
) -> int:
    """Write Dockerfile and .dockerignore at the project root; run `docker build` when docker is there."""
    if not PYTHON_VERSION.match(python):
        raise UsageError(
            f"--python {python!r} is not a Python version; allowed: a minor version such as 3.12 (the tag "
            "of the python:<version>-slim base image)."
        )
    config, spec = load_spec(workdir, environ)
    root = config.project_dir
    write_if_ours(root / "Dockerfile", render(spec, python), force)
    write_if_ours(root / ".dockerignore", DOCKERIGNORE, force)
    output.success(f"wrote Dockerfile and .dockerignore in {root}")
    image = tag or f"{spec.name}:latest"
    command = ["docker", "build", "--tag", image, str(root)]
    docker = which("docker")
    if docker is None:
        output.line("docker is not on PATH; build the image where it is, with:")
        output.line(f"  {shlex.join(command)}")
        return 0
    status = subprocess.call([docker, *command[1:]])
    if status != 0:
        raise EdgecliError(
            f"`{shlex.join(command)}` failed with status {status} (docker's message is above). The "
            "Dockerfile is written: fix what docker reports (is its daemon running?) and run the command "
            "again, or `edgecli build` once more."
        )
    output.success(f"built {image}; try it with `docker run --rm -p {spec.port}:{spec.port} {image}`")
    return 0


def write_if_ours(path: Path, text: str, force: bool) -> None:
    """A file edgecli wrote before is written again; a file of the user's only with --force."""
    if path.exists() and not force:
        try:
            ours = path.read_text(encoding="utf-8").startswith(MARK)
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise EdgecliError(
                f"{path} exists and was not written by edgecli, so it is left as it is. Move it away, or "
                "pass --force to replace it."
            )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EdgecliError(
            f"cannot write {path}: {exc.strerror}. Check the directory's permissions."
        ) from None


def export(
    workdir: Path | None, target: str, output: Output, environ: Mapping[str, str], image: str | None
) -> int:
    """Print the manifests for `target` (one of manifests.TARGETS) on stdout."""
    if target not in manifests.TARGETS:
        allowed = ", ".join(manifests.TARGETS)
        raise UsageError(f"`edgecli export {target}`: unknown target; allowed: {allowed}.")
    _, spec = load_spec(workdir, environ)
    image = image or f"{spec.name}:latest"
    output.out.file.write(render_export(spec, target, image))
    output.out.file.flush()
    return 0


def render_export(spec: DeploySpec, target: str, image: str) -> str:
    if target == "knative":
        return _header(spec, "A Knative Serving Service") + yaml.dump_all(manifests.knative(spec, image))
    if target == "kubernetes":
        return _header(spec, "A Kubernetes Deployment and Service") + yaml.dump_all(
            manifests.kubernetes(spec, image)
        )
    text = _header(spec, "A docker-compose service for a self-hosted Supabase", compose=True) + yaml.dump_all(
        manifests.compose(spec, image)
    )
    route = yaml.dump([manifests.kong_route(spec)])
    note = (
        "# In the self-hosted stack, this service replaces its `functions` service (the edge runtime).\n"
        "# Its gateway (volumes/api/kong.yml) then routes /functions/v1/* here with this service entry:\n"
    )
    return text + note + "".join(f"#   {line}\n" for line in route.splitlines())


def _header(spec: DeploySpec, what: str, *, compose: bool = False) -> str:
    lines = [f"# {what} for the edgecli functions {', '.join(spec.functions) or '(none)'}."]
    names = ", ".join(spec.secret_env)
    if spec.secret_env and compose:
        lines.append(f"# Set {names} in the stack's .env: compose fills in each ${{NAME}}.")
    elif spec.secret_env:
        lines.append(
            f"# It reads {names} from the Secret {manifests.secret_name(spec)}; create it first, e.g."
        )
        keys = " ".join(f"--from-literal={name}=..." for name in spec.secret_env)
        lines.append(f"#   kubectl create secret generic {manifests.secret_name(spec)} {keys}")
    return "\n".join(lines) + "\n"
