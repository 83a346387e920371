"""Generic fixtures: where the repo is, and a factory for small projects on disk."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

# A shell starts a background job (`pytest ... &` in a script) with SIGINT ignored, and an ignored signal
# stays ignored across exec: the CLIs and nested sessions the tests Ctrl-C would never hear it. A handler
# here is reset to the default in every child, so they hear Ctrl-C however pytest was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parents[1]
# `supabase init`'s config.toml, carried in the repository (tests/fixtures/README.md says where from).
STOCK_SUPABASE_CONFIG = REPO_ROOT / "tests" / "fixtures" / "supabase-init-config.toml"

MINIMAL_CONFIG = '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "per_worker"\n'
HELLO_SOURCE = (
    "from starlette.responses import JSONResponse\n"
    "from edgecli import serve\n\n"
    "async def handler(req):\n"
    '    return JSONResponse({"message": "Hello!"})\n\n'
    "serve(handler)\n"
)

MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Build a project under tmp_path and return its directory (the one holding supabase/).

    `config` is config.toml's text; `functions` maps a function name to its index.py source (a name with a
    "/" writes that relative file instead, e.g. {"ts/index.ts": "..."}), and a bare list of names gets
    the `hello_source` function each; `name` picks the directory.
    """

    def make(
        config: str = MINIMAL_CONFIG,
        functions: Mapping[str, str] | list[str] | None = None,
        *,
        name: str = "project",
    ) -> Path:
        root = tmp_path / name
        functions_dir = root / "supabase" / "functions"
        functions_dir.mkdir(parents=True)
        (root / "supabase" / "config.toml").write_text(config, encoding="utf-8")
        files = dict.fromkeys(functions, HELLO_SOURCE) if isinstance(functions, list) else functions or {}
        for key, source in files.items():
            path = functions_dir / (key if "/" in key else f"{key}/index.py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        return root

    return make


@pytest.fixture
def hello_source() -> str:
    """A tiny valid function (its index.py)."""
    return HELLO_SOURCE


@pytest.fixture
def stock_supabase_config() -> str:
    """The text of the config.toml `supabase init` writes. Missing fixture = failure, never a skip."""
    assert STOCK_SUPABASE_CONFIG.is_file(), f"test fixture missing: {STOCK_SUPABASE_CONFIG}"
    return STOCK_SUPABASE_CONFIG.read_text(encoding="utf-8")
