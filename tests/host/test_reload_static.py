"""Reload planning for `static_files`: which function a changed static file belongs to, and what is
watched for files kept outside supabase/functions/ (pure functions, no processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgecli.config import load_config
from edgecli.host.plan import owner_of, plan_reload
from edgecli.host.watch import watch_set

pytestmark = pytest.mark.timeout(10)
MakeProject = Callable[..., Path]
CONFIG = '[functions.site]\nstatic_files = ["./functions/site/*.html", "./static/*.txt", "./top.md"]\n'


def test_static_files_belong_to_their_function_and_their_folders_are_watched(
    make_project: MakeProject,
) -> None:
    root = make_project(CONFIG, ["site", "other"])
    supabase = root.resolve() / "supabase"
    (supabase / "static").mkdir()
    (supabase / "static" / "a.txt").write_text("a")
    (supabase / "top.md").write_text("top")
    config = load_config(root, environ={})
    assert owner_of(config, supabase / "static" / "a.txt") == "site"
    assert owner_of(config, supabase / "static" / "new.txt") == "site"  # a file the glob will match
    assert owner_of(config, supabase / "static" / "a.png") is None
    watch = watch_set(config)
    assert supabase / "static" in watch.recursive
    assert watch.is_relevant(supabase / "top.md") and watch.is_relevant(supabase / "static" / "b.txt")
    plan = plan_reload(config, load_config(root, environ={}), [supabase / "static" / "a.txt"])
    assert plan.reloaded == ("site",)
