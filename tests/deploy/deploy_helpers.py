"""What the deploy tests share: a project to deploy, and the `edgecli` command run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EDGECLI = Path(sys.executable).parent / "edgecli"  # the console script installed with the package
SECRET_VALUE = "do-not-print-this-7f3a"

CONFIG = """\
project_id = "Shop Functions"

[auth]
jwt_secret = "env(SHOP_JWT_SECRET)"

[edge_runtime]
policy = "per_worker"
max_parallelism = 2
wall_clock_limit_sec = 120
graceful_exit_timeout_sec = 15

[edge_runtime.secrets]
STRIPE_KEY = "env(STRIPE_KEY)"
PLAIN = "a literal value, baked into config.toml already"

[functions.orders]
max_parallelism = 3
"""

HANDLER = """\
from starlette.responses import PlainTextResponse

async def handler(req):
    return PlainTextResponse("ok")
"""


def deploy_project(root: Path) -> Path:
    """Two functions; `orders` has its own requirements.txt and `mail` a pyproject.toml."""
    functions = root / "supabase" / "functions"
    for name in ("orders", "mail"):
        (functions / name).mkdir(parents=True)
        (functions / name / "index.py").write_text(HANDLER)
    (root / "supabase" / "config.toml").write_text(CONFIG)
    (functions / "orders" / "requirements.txt").write_text("httpx>=0.27\n")
    (functions / "mail" / "pyproject.toml").write_text(
        '[project]\nname = "mail"\ndependencies = ["jinja2>=3"]\n'
    )
    (functions / ".env").write_text(f"SMTP_PASSWORD={SECRET_VALUE}\n")
    return root


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert EDGECLI.is_file(), f"the edgecli console script is not installed next to {sys.executable}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECLI_")}
    base["STRIPE_KEY"] = SECRET_VALUE  # set, so that a manifest printing values would show it
    return subprocess.run(
        [str(EDGECLI), *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
