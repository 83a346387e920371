"""Helpers shared by the hot-reload tests that need no server (test_watch.py, test_plan.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecli.config import Config, Overrides, load_config

CONFIG = '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "per_worker"\n'

MakeProject = Callable[..., Path]  # the `make_project` fixture of tests/conftest.py


def load(root: Path, **overrides: Any) -> Config:
    return load_config(root, Overrides(**overrides), environ={})


def functions_dir(root: Path) -> Path:
    return root.resolve() / "supabase" / "functions"


def set_config(root: Path, text: str) -> None:
    (root / "supabase" / "config.toml").write_text(text, encoding="utf-8")
