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
        "",
        f"RUN useradd --create-home --uid {UID} --user-group {USER}",
        f"WORKDIR {APP_DIR}",
        *_dependency_lines(spec),
        "COPY supabase/ supabase/",
        # The code and the installed dependencies stay root's (read-only to the server); only the runtime
        # state directory is writable, for `serve --prod --store`.
        f"RUN mkdir -p supabase/.temp/edgecli && chown {USER}:{USER} supabase/.temp supabase/.temp/edgecli",
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
    """Each function's own dependencies, installed where serve looks for them (edgecli/host/deps.py), so
    that a container installs nothing when it starts. Only their files are copied first: the layer is
    kept until one of them changes."""
    files = [deps.file for deps in spec.deps if deps.file is not None]
    if not files:
        return []
    lines = ["", f"# The functions' own dependencies: {', '.join(d.name for d in spec.deps if d.file)}."]
    lines += [f"COPY {file} {file}" for file in files]
    lines += ["RUN python -m edgecli.host.deps " + " ".join(shlex.quote(file) for file in files), ""]
    return lines
