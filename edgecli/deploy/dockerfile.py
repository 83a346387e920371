"""The `Dockerfile` and `.dockerignore` that `edgecli build` writes at the project root.

A slim Python base; edgecli, then each function's own dependencies (layers that change least come
first); `supabase/` copied in; a non-root user; the container contract of Knative and Cloud Run: listen
on $PORT, answer a health check, stop on SIGTERM. Nothing secret goes in: env files stay out of the
build context, and secrets reach the container as environment variables.
"""

from __future__ import annotations

import json
import shlex

from edgecli import __version__
from edgecli.deploy.spec import APP_DIR, DeploySpec

MARK = "# Written by `edgecli build`"
USER = "edge"
UID = 10001


# The image may run where edgecli's own package index is not the default one: the build argument
# EDGECLI_PACKAGE names what pip installs (a version, a wheel copied into the context, a VCS URL).
def default_package(spec: DeploySpec) -> str:
    return f"edgecli[deno]=={__version__}" if spec.deno else f"edgecli=={__version__}"


ENTRYPOINT = ("edgecli", "serve", "--prod")
HEALTHCHECK_CODE = (
    "import os, urllib.request; "
    "urllib.request.urlopen('http://127.0.0.1:%s{path}' % os.environ.get('PORT', '{port}'), timeout=2)"
)

DOCKERIGNORE = f"""{MARK}: only supabase/ goes into the image, without runtime state or secrets.
*
!supabase/
supabase/.temp/
supabase/**/.env
supabase/**/.env.*
supabase/**/__pycache__/
supabase/**/*.pyc
supabase/**/.venv/
supabase/**/node_modules/
"""


def render(spec: DeploySpec, python: str) -> str:
    """The Dockerfile's text. Every RUN is a shell line, so a test can run the install steps itself."""
    health = HEALTHCHECK_CODE.replace("{path}", spec.health_path).replace("{port}", str(spec.port))
    lines = [
        f"{MARK} for the functions {', '.join(spec.functions) or '(none yet)'}; run it again after adding",
        "# a function or a dependency (it overwrites this file).",
        f"FROM python:{python}-slim",
        "",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\",
        "    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        f"    PORT={spec.port}",
        "",
        "# edgecli itself: `docker build --build-arg EDGECLI_PACKAGE=...` installs another version.",
        f'ARG EDGECLI_PACKAGE="{default_package(spec)}"',
        'RUN pip install "$EDGECLI_PACKAGE"',
        *_dependency_lines(spec),
        "",
        f"RUN useradd --create-home --uid {UID} --user-group {USER}",
        f"WORKDIR {APP_DIR}",
        "COPY supabase/ supabase/",
        # The code stays root's (read-only to the server); only the runtime state directory is writable,
        # for `serve --prod --store`.
        f"RUN mkdir -p supabase/.temp && chown {USER}:{USER} supabase/.temp",
        f"USER {USER}",
        "",
        f"EXPOSE {spec.port}",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\",
        f"    CMD {json.dumps(['python', '-c', health])}",
        "STOPSIGNAL SIGTERM",
        f"ENTRYPOINT {json.dumps(list(ENTRYPOINT))}",
        "",
    ]
    return "\n".join(lines)


def _dependency_lines(spec: DeploySpec) -> list[str]:
    lines: list[str] = []
    for deps in spec.deps:
        if deps.requirements is None and not deps.packages:
            continue
        lines += ["", f"# {deps.name}'s own dependencies."]
        if deps.requirements is not None:
            target = f"/tmp/requirements/{deps.name}.txt"
            lines += [f"COPY {deps.requirements} {target}", f"RUN pip install -r {target}"]
        if deps.packages:
            lines.append("RUN pip install " + " ".join(shlex.quote(p) for p in deps.packages))
    return lines
