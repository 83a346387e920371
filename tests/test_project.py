"""Project discovery and scaffolding (init, new, templates), called as library functions."""

from __future__ import annotations

import asyncio
import io
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import edgecli
from edgecli.config import LIMIT_KEYS, POLICIES, Limits, load_config
from edgecli.console import Output, make_console
from edgecli.errors import ConfigError, EdgecliError, ProjectNotFoundError, UsageError
from edgecli.project import (
    find_project,
    init_project,
    list_templates,
    new_function,
    print_templates,
)

pytestmark = pytest.mark.timeout(20)
MakeProject = Callable[..., Path]


class Captured(Output):
    """An Output writing to buffers, for asserting what a command printed."""

    def __init__(self) -> None:
        self.out_buf, self.err_buf = io.StringIO(), io.StringIO()
        super().__init__(out=make_console(self.out_buf), err=make_console(self.err_buf))

    @property
    def text(self) -> str:
        return self.out_buf.getvalue() + self.err_buf.getvalue()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for directories): proves "nothing was touched"."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


# --- find_project ---------------------------------------------------------------------------------------


def test_find_project_from_workdir_cwd_and_parents(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project()
    assert find_project(root) == root.resolve()
    nested = root / "supabase" / "functions" / "deep"
    nested.mkdir()
    monkeypatch.chdir(nested)
    assert find_project(None) == root.resolve()


def test_find_project_outside_any_project_says_run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectNotFoundError, match="edgecli init") as info:
        find_project(None)
    assert info.value.exit_code == 1
    with pytest.raises(ProjectNotFoundError, match=r"--workdir .*edgecli init --workdir"):
        find_project(tmp_path)


# --- init -----------------------------------------------------------------------------------------------


def test_init_writes_a_documented_config_functions_and_gitignore(tmp_path: Path) -> None:
    out = Captured()
    init_project(tmp_path / "app", force=False, output=out)
    supabase = tmp_path / "app" / "supabase"
    assert (supabase / "functions").is_dir()
    ignored = (supabase / ".gitignore").read_text().splitlines()
    assert ".temp" in ignored and ".env" in ignored
    config = load_config(tmp_path / "app", environ={})
    assert config.warnings == () and config.limits == Limits() and config.port == 54321
    text = (supabase / "config.toml").read_text()
    assert 'project_id = "app"' in text
    assert "supabase/config.toml" in out.text and "edgecli new hello" in out.text


def test_init_template_documents_every_policy_and_limit_with_its_default() -> None:
    text = (Path(edgecli.__file__).parent.parent / "templates" / "config.toml").read_text()
    edge = text[text.index("[edge_runtime]") : text.index("[edge_runtime.secrets]")]
    for policy in POLICIES:
        assert f'"{policy}"' in edge
    documented = dict(re.findall(r"^# (\w+) = ([\d.]+)", edge, flags=re.MULTILINE))
    defaults = {key: getattr(Limits(), key) for key in LIMIT_KEYS} | {
        "event_retention": 200_000,
        "event_retention_mb": 100,
    }
    assert {key: float(value) for key, value in documented.items()} == defaults
    assert tomllib.loads(text)["api"]["port"] == 54321


def test_init_refuses_an_existing_config_and_touches_nothing(make_project: MakeProject) -> None:
    root = make_project("# mine\n[api]\nport = 1234\n")
    (root / "supabase" / "functions").rmdir()
    before = snapshot(root)
    with pytest.raises(EdgecliError, match="--force") as info:
        init_project(root, force=False, output=Captured())
    assert info.value.exit_code == 1
    assert snapshot(root) == before


def test_init_force_replaces_the_config_and_keeps_functions_and_gitignore(
    make_project: MakeProject,
) -> None:
    root = make_project("# mine\n", ["hello"])
    (root / "supabase" / ".gitignore").write_text("custom\n")
    init_project(root, force=True, output=Captured())
    assert "[edge_runtime]" in (root / "supabase" / "config.toml").read_text()
    assert (root / "supabase" / ".gitignore").read_text() == "custom\n"
    assert (root / "supabase" / "functions" / "hello" / "index.py").is_file()


# --- new ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["hello", "background", "router"])
def test_new_from_each_template(make_project: MakeProject, stock_supabase_config: str, template: str) -> None:
    root = make_project(stock_supabase_config)
    out = Captured()
    new_function(root, "my-fn", template=template, output=out)
    source = (root / "supabase" / "functions" / "my-fn" / "index.py").read_text()
    assert "__NAME__" not in source and "edgecli invoke my-fn" in source
    compile(source, "index.py", "exec")
    config = load_config(root, environ={})
    assert list(config.functions) == ["my-fn"] and config.warnings == ()
    assert config.functions["my-fn"].verify_jwt
    assert "supabase/functions/my-fn/index.py" in out.text
    tests = (root / "supabase" / "functions" / "my-fn" / "test_my_fn.py").read_text()
    assert "__NAME__" not in tests and 'edge.invoke("my-fn"' in tests
    compile(tests, "test_my_fn.py", "exec")
    assert "supabase/functions/my-fn/test_my_fn.py" in out.text
    assert not (root / "supabase" / "functions" / "my-fn" / "test_function.py").exists()
    assert "edgecli serve" in out.text and "edgecli invoke my-fn" in out.text


@pytest.mark.parametrize("template", ["ts-hello", "ts-background"])
def test_new_from_a_typescript_template(
    make_project: MakeProject, stock_supabase_config: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgecli.config.functions.deno_binary", lambda: "/opt/deno")
    root = make_project(stock_supabase_config)
    out = Captured()
    new_function(root, "my-ts", template=template, output=out)
    folder = root / "supabase" / "functions" / "my-ts"
    assert sorted(p.name for p in folder.iterdir()) == ["index.ts", "test_my_ts.py"]
    source = (folder / "index.ts").read_text()
    assert "__NAME__" not in source and "edgecli invoke my-ts" in source and "Deno.serve(" in source
    config = load_config(root, environ={})
    assert config.functions["my-ts"].runtime == "deno" and config.warnings == ()
    assert (
        tomllib.loads((root / "supabase" / "config.toml").read_text())["functions"]["my-ts"]["entrypoint"]
        == "./functions/my-ts/index.ts"
    )
    assert "supabase/functions/my-ts/index.ts" in out.text and "edgecli invoke my-ts" in out.text


def test_new_list_describes_the_typescript_templates() -> None:
    described = {t.name: t.description for t in list_templates()}
    assert described["ts-hello"].startswith("JSON in, JSON out in TypeScript")
    assert described["ts-background"].startswith("Background work in TypeScript")


def test_new_appends_the_block_and_keeps_every_existing_byte(
    make_project: MakeProject, stock_supabase_config: str
) -> None:
    root = make_project(stock_supabase_config)
    new_function(root, "hello", template="hello", output=Captured())
    new_function(root, "second", template="router", output=Captured())
    text = (root / "supabase" / "config.toml").read_text()
    assert text.startswith(stock_supabase_config)
    added = text[len(stock_supabase_config) :]
    assert tomllib.loads(added) == {
        "functions": {
            name: {"enabled": True, "verify_jwt": True, "entrypoint": f"./functions/{name}/index.py"}
            for name in ("hello", "second")
        }
    }


def test_new_leaves_an_existing_block_alone_with_a_note(make_project: MakeProject) -> None:
    config = "[functions.hello]\n# my comment\nverify_jwt = false\n"
    root = make_project(config)
    out = Captured()
    new_function(root, "hello", template="hello", output=out)
    assert (root / "supabase" / "config.toml").read_text() == config
    assert (root / "supabase" / "functions" / "hello" / "index.py").is_file()
    assert "already has [functions.hello]" in out.text


def test_new_never_overwrites_a_function(make_project: MakeProject) -> None:
    root = make_project("", {"hello": "# mine\n"})
    before = snapshot(root)
    with pytest.raises(EdgecliError, match="already exists") as info:
        new_function(root, "hello", template="hello", output=Captured())
    assert info.value.exit_code == 1 and snapshot(root) == before


@pytest.mark.parametrize("name", ["../x", "1a", "a/b", "", "a b", "x\n", "-x", "_x"])
def test_new_refuses_bad_names_and_writes_nothing(make_project: MakeProject, name: str) -> None:
    root = make_project()
    before = snapshot(root.parent)
    with pytest.raises(UsageError, match="not a valid function name") as info:
        new_function(root, name, template="hello", output=Captured())
    assert info.value.exit_code == 2 and snapshot(root.parent) == before


def test_new_without_a_name_or_with_an_unknown_template_is_a_usage_error(make_project: MakeProject) -> None:
    root = make_project()
    with pytest.raises(UsageError, match="edgecli new NAME"):
        new_function(root, None, template="hello", output=Captured())
    with pytest.raises(UsageError, match="background, hello, router"):
        new_function(root, "x", template="nope", output=Captured())
    assert not (root / "supabase" / "functions" / "x").exists()


def test_new_with_a_broken_config_is_a_config_error_and_writes_nothing(make_project: MakeProject) -> None:
    root = make_project("[api\n")
    with pytest.raises(ConfigError, match=r"supabase/config.toml:1: not valid TOML"):
        new_function(root, "x", template="hello", output=Captured())
    assert not (root / "supabase" / "functions" / "x").exists()


def test_new_with_an_inline_functions_table_explains_and_writes_nothing(make_project: MakeProject) -> None:
    root = make_project("functions = { other = { enabled = true } }\n")
    with pytest.raises(EdgecliError, match=r"(?s)by hand.*\[functions\.x\]"):
        new_function(root, "x", template="hello", output=Captured())
    assert not (root / "supabase" / "functions" / "x").exists()


# --- templates ------------------------------------------------------------------------------------------


def test_templates_are_listed_with_a_description_and_an_invoke_line() -> None:
    templates = {t.name: t for t in list_templates()}
    assert {"hello", "background", "router"} <= set(templates)
    for t in templates.values():
        assert t.description and t.try_it.startswith("edgecli invoke __NAME__")
    out = Captured()
    print_templates(out)
    lines = out.text.splitlines()
    assert any(line.split()[:1] == ["hello"] and line.endswith("(default)") for line in lines)
    assert all(any(line.split()[:1] == [name] for line in lines) for name in templates)


class FakeRuntime:
    """Stands in for EdgeRuntime: records what a template registers."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []
        self.listeners: dict[str, Callable[[Any], Any]] = {}

    def wait_until(self, awaitable: Any) -> None:
        self.tasks.append(awaitable)

    def on(self, name: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
            self.listeners[name] = fn
            return fn

        return register


def run_template(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, FakeRuntime]:
    """Execute a template (name "demo") with serve/EdgeRuntime stubbed; return what it served."""
    served: list[Any] = []
    runtime = FakeRuntime()
    monkeypatch.setattr(edgecli, "serve", served.append)
    monkeypatch.setattr(edgecli, "EdgeRuntime", runtime)
    folder = next(t.folder for t in list_templates() if t.name == name)
    source = (folder / "index.py").read_text().replace("__NAME__", "demo")
    exec(compile(source, f"{name}/index.py", "exec"), {"__name__": "demo_function"})
    assert len(served) == 1
    return served[0], runtime


def call(target: Any, requests: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    """Send (method, path, json) requests in order to a served handler or ASGI app, in process."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = (
        target
        if isinstance(target, Starlette)
        else Starlette(routes=[Route("/demo", target, methods=["POST"])])
    )

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.request(
                    method, path, **({"content": body} if isinstance(body, bytes) else {"json": body})
                )
                for method, path, body in requests
            ]

    return asyncio.run(go())


def test_hello_template_answers_hello_name(monkeypatch: pytest.MonkeyPatch) -> None:
    handler, _ = run_template("hello", monkeypatch)
    ok, bad = call(handler, [("POST", "/demo", {"name": "Functions"}), ("POST", "/demo", b"not json")])
    assert ok.json() == {"message": "Hello Functions!"}
    assert bad.status_code == 400


def test_router_template_routes_under_the_function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = run_template("router", monkeypatch)
    listed, one, created, again, missing, index = call(
        app,
        [
            ("GET", "/demo/items", None),
            ("GET", "/demo/items/2", None),
            ("POST", "/demo/items", {"name": "pear"}),
            ("GET", "/demo/items/3", None),
            ("GET", "/demo/items/99", None),
            ("GET", "/demo", None),
        ],
    )
    assert [item["name"] for item in listed.json()] == ["apple", "banana"]
    assert one.json() == {"id": 2, "name": "banana"}
    assert created.status_code == 201 and again.json()["name"] == "pear"
    assert missing.status_code == 404 and index.status_code == 200


@pytest.mark.timeout(10)
def test_background_template_defers_work_and_handles_events(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler, runtime = run_template("background", monkeypatch)
    monkeypatch.setitem(handler.__globals__, "STEP_SECONDS", 0)
    reply, failing, refused = call(
        handler,
        [
            ("POST", "/demo", {"steps": 2}),
            ("POST", "/demo", {"steps": 1, "fail": True}),
            ("POST", "/demo", {"steps": 0}),
        ],
    )
    assert reply.status_code == 202 and reply.json()["steps"] == 2
    assert failing.status_code == 202 and refused.status_code == 400
    assert len(runtime.tasks) == 2  # the work was handed to wait_until, not awaited
    asyncio.run(runtime.tasks[0])
    with pytest.raises(RuntimeError, match="on purpose"):
        asyncio.run(runtime.tasks[1])
    job = reply.json()["job"]
    assert f"job {job}: step 2/2 done" in capsys.readouterr().out

    class Event:
        detail = {"reason": "termination"}
        reason = RuntimeError("boom")
        handled = False

        def prevent_default(self) -> None:
            self.handled = True

    event = Event()
    runtime.listeners["beforeunload"](event)
    runtime.listeners["unhandledrejection"](event)
    assert event.handled and "termination" in capsys.readouterr().out


def test_the_demo_project_is_the_templates_rendered_and_loads_cleanly() -> None:
    repo = Path(edgecli.__file__).resolve().parent.parent
    config = load_config(repo, environ={})
    assert list(config.functions) == ["apikey", "background", "hello", "router", "user"]
    assert config.warnings == () and config.skipped == ()
    for t in list_templates():
        if t.entrypoint != "index.py":
            continue  # the TypeScript templates need Deno, which the demo's quickstart does not install
        rendered = (t.folder / "index.py").read_text().replace("__NAME__", t.name)
        assert config.functions[t.name].entrypoint.read_text() == rendered, f"regenerate the {t.name} demo"
        tests = (t.folder / "test_function.py").read_text().replace("__NAME__", t.name)
        demo_tests = config.functions[t.name].entrypoint.parent / f"test_{t.name}.py"
        assert demo_tests.read_text() == tests, f"regenerate the {t.name} demo's tests"
