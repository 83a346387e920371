"""`edgecli new --auth user|apikey|none`: the template and verify_jwt each mode writes, and the user and
apikey templates answering over a real serve, called with `invoke --user` and `invoke --key secret`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serving import Served

from edgecli.config import load_config
from edgecli.console import Output, make_console
from edgecli.errors import UsageError
from edgecli.project import new_function

MakeProject = Callable[..., Path]


def _quiet() -> Output:
    return Output(out=make_console(io.StringIO()), err=make_console(io.StringIO()))


def _new(root: Path, name: str, template: str = "hello", auth: str | None = None) -> str:
    new_function(root, name, template=template, output=_quiet(), auth=auth)
    return (root / "supabase" / "functions" / name / "index.py").read_text()


@pytest.mark.timeout(10)
def test_each_auth_mode_writes_its_template_and_verify_jwt(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    root = make_project(stock_supabase_config)
    assert "x-edgecli-jwt-claims" in _new(root, "me", auth="user")
    assert "SUPABASE_SECRET_KEYS" in _new(root, "cron", auth="apikey")
    assert "Route(" in _new(root, "open", template="router", auth="none")
    functions = load_config(root, environ={}).functions
    assert {name: fn.verify_jwt for name, fn in functions.items()} == {
        "me": True,
        "cron": False,
        "open": False,
    }


@pytest.mark.timeout(10)
def test_auth_modes_that_bring_a_template_refuse_another(make_project: MakeProject) -> None:
    root = make_project()
    with pytest.raises(UsageError, match="does not go with --template router"):
        _new(root, "x", template="router", auth="user")
    with pytest.raises(UsageError, match="allowed: user, apikey, none"):
        _new(root, "x", auth="admin")
    assert not (root / "supabase" / "functions" / "x").exists()


def _invoke(root: Path, srv: Served, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecli",
            "invoke",
            *args,
            "--url",
            srv.base_url,
            "--json",
            "--workdir",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(result.stdout.splitlines()[0])
    assert isinstance(record, dict)
    return record


@pytest.mark.timeout(90)
def test_user_and_apikey_templates_over_a_real_serve(make_project: MakeProject) -> None:
    root = make_project()
    _new(root, "me", auth="user")
    _new(root, "cron", auth="apikey")
    with Served(root, verify_jwt=True) as srv:
        as_user = _invoke(root, srv, "me", "--user", "alice")
        assert as_user["status"] == 200 and as_user["body"]["user"] == "alice"
        assert _invoke(root, srv, "me")["status"] == 403  # the anon key is a JWT, but no user
        with_key = _invoke(root, srv, "cron", "--key", "secret")
        assert with_key["status"] == 200 and with_key["body"] == {"ok": True, "key": "default"}
        assert _invoke(root, srv, "cron", "--key", "publishable")["status"] == 401
