"""Real-process tests: what a Deno worker refuses at boot (type errors, imports it cannot load), and
npm:/jsr: imports served from Deno's cache with no registry to reach.

Each test has a Deno cache of its own (DENO_DIR in its temporary directory), filled, when it needs
packages, from tests/fixtures/deno-packages through a local registry that is gone before serve starts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deno_registry import Registry
from serving import Served, wait_until
from test_serve_deno import project, write

from edgecli.deno import deno_binary

pytestmark = [
    pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])"),
    # A first type check in an empty cache runs TypeScript over Deno's own declarations: seconds.
    pytest.mark.timeout(180),
]

TYPE_ERROR = """
const port: number = "54321";
Deno.serve(() => new Response(`port ${port}`));
"""


def test_a_type_error_is_a_boot_error_with_deno_message_until_fixed(tmp_path: Path) -> None:
    root = project(tmp_path, {"typed/index.ts": TYPE_ERROR})
    with Served(root, env={"DENO_DIR": str(tmp_path / "deno")}) as srv:
        r = srv.get("typed")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "BOOT_ERROR"
        error = srv.wait_event(kind="boot_error", function="typed")
        assert error["message"].startswith("type error: TS2322 [ERROR]: Type 'string' is not assignable")
        assert error["message"].endswith("typed/index.ts:2:7)")  # where, in one line
        assert "TS2322" in error["error"] and 'const port: number = "54321";' in error["error"]
        assert "\x1b[" not in error["error"]  # no colours in a record
        write(root, "typed/index.ts", TYPE_ERROR.replace('"54321"', "54321"))
        wait_until(lambda: srv.get("typed").text == "port 54321", 120, what="the fixed function to serve")
        checked = srv.events(kind="log", function="typed", level="info")
        assert [
            e for e in checked if e["message"].startswith("type-checked index.ts in ")
        ]  # the fixed code's


USES_PACKAGES = """
import leftPad from "npm:left-pad-mini@1.0.0";
import { shout } from "jsr:@edgecli/shout@1.0.0";

Deno.serve(() => new Response(`${leftPad("7", 3, "0")} ${shout("cached")}`));
"""


def test_npm_and_jsr_imports_boot_from_the_cache_with_no_registry(tmp_path: Path) -> None:
    root = project(tmp_path, {"pkgs/index.ts": USES_PACKAGES})
    entry = root / "supabase" / "functions" / "pkgs" / "index.ts"
    with Registry(tmp_path / "registry") as registry:
        env = registry.env(tmp_path / "deno")
        binary = deno_binary()
        assert binary is not None
        cached = subprocess.run(
            [binary, "cache", "--quiet", str(entry)],
            env={**os.environ, **env, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cached.returncode == 0, cached.stderr
    # The registry's port refuses now: the worker has Deno's cache and nothing else.
    with Served(root, env=env) as srv:
        r = srv.get("pkgs")
        assert (r.status_code, r.text) == (200, "007 CACHED!"), r.text


MISSING = {
    "npm": 'import pad from "npm:left-pad-edgecli-missing@9.9.9";\nDeno.serve(() => new Response(pad));\n',
    "jsr": 'import { x } from "jsr:@edgecli/missing@1.0.0";\nDeno.serve(() => new Response(x));\n',
}


def test_a_package_neither_cached_nor_reachable_is_a_one_line_boot_error(tmp_path: Path) -> None:
    root = project(tmp_path, {f"{kind}/index.ts": source for kind, source in MISSING.items()})
    env = Registry(tmp_path / "registry").env(tmp_path / "deno")  # never started: its port refuses
    with Served(root, env=env) as srv:
        for kind, name in (("npm", "left-pad-edgecli-missing"), ("jsr", "@edgecli/missing")):
            r = srv.get(kind)
            assert r.status_code == 503 and r.json()["code"] == "BOOT_ERROR", r.text
            error = srv.wait_event(kind="boot_error", function=kind)
            assert name in error["message"] and "\n" not in error["message"]
            assert f"(at {root}/supabase/functions/{kind}/index.ts:1:" in error["message"]
            assert name in r.json()["message"]
            assert "run `deno cache" in error["message"]  # and how to get it there


LOCKED = """
import leftPad from "pad";
Deno.serve(() => new Response(leftPad("7", 3, "0")));
"""


def test_deno_keeps_its_lock_file_out_of_the_function_folder_and_honours_the_users(tmp_path: Path) -> None:
    config = '{"imports": {"pad": "npm:left-pad-mini@1.0.0"}}'
    root = project(tmp_path, {"locked/index.ts": LOCKED, "locked/deno.json": config})
    folder = root / "supabase" / "functions" / "locked"
    with (
        Registry(tmp_path / "registry") as registry,
        Served(root, env=registry.env(tmp_path / "deno")) as srv,
    ):
        r = srv.get("locked", timeout=120)
        assert (r.status_code, r.text) == (200, "007"), r.text
        assert not (folder / "deno.lock").exists()  # Deno locked the package, in a file of serve's
        # One reload, for the one change the user made: had Deno written deno.lock in the folder, its
        # reload would have come first (or with this one).
        write(root, "locked/index.ts", LOCKED.replace('"0"', '"-"'))
        srv.wait_event(kind="reload", function="locked", timeout=30)
        wait_until(lambda: srv.get("locked").text == "--7", 120, what="the new code to serve")
        assert [e["changes"] for e in srv.events(kind="reload")] == [["supabase/functions/locked/index.ts"]]

        # The user's own deno.lock counts: a change to it reloads, and what it pins is checked.
        deno = deno_binary()
        assert deno is not None
        cached = subprocess.run(
            [deno, "cache", "--quiet", "--config", str(folder / "deno.json"), str(folder / "index.ts")],
            env={**os.environ, **registry.env(tmp_path / "deno"), "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cached.returncode == 0 and (folder / "deno.lock").is_file(), cached.stderr
        changes = ["supabase/functions/locked/deno.lock"]
        wait_until(lambda: changes in [e["changes"] for e in srv.events(kind="reload")], 30)
        lock = (folder / "deno.lock").read_text()
        write(root, "locked/deno.lock", f"<<<<<<< HEAD\n{lock}")  # a merge left unresolved
        error = srv.wait_event(kind="boot_error", function="locked", timeout=120)
        message = (
            f"Failed reading lockfile at '{folder / 'deno.lock'}': Failed parsing. Lockfile may be corrupt"
        )
        assert error["message"] == message, error  # the user's file, not serve's copy of it
        write(root, "locked/deno.lock", lock)
        wait_until(lambda: srv.get("locked").text == "--7", 120, what="the function to serve again")


PACKAGE_JSON = '{"dependencies": {"left-pad-mini": "1.0.0"}}'
USES_NPM = """
import leftPad from "npm:left-pad-mini@1.0.0";
Deno.serve(() => new Response(leftPad("7", 3, "0")));
"""


def test_npm_imports_beside_a_package_json_with_no_node_modules_boot_from_the_cache(tmp_path: Path) -> None:
    """Deno alone would refuse every npm package here (it expects `deno install` to have filled a
    node_modules); serve has it take them from its cache, and keeps the lock file out of the folder."""
    root = project(tmp_path, {"pkgjson/index.ts": USES_NPM, "pkgjson/package.json": PACKAGE_JSON})
    folder = root / "supabase" / "functions" / "pkgjson"
    with (
        Registry(tmp_path / "registry") as registry,
        Served(root, env=registry.env(tmp_path / "deno")) as srv,
    ):
        r = srv.get("pkgjson", timeout=120)
        assert (r.status_code, r.text) == (200, "007"), r.text
        write(root, "pkgjson/index.ts", USES_NPM.replace('"0"', '"-"'))
        wait_until(lambda: srv.get("pkgjson").text == "--7", 120, what="the new code to serve")
        assert [e["changes"] for e in srv.events(kind="reload")] == [["supabase/functions/pkgjson/index.ts"]]
    assert sorted(p.name for p in folder.iterdir()) == ["index.ts", "package.json"]
