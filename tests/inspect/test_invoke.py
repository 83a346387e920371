"""`edgecli invoke` through the real CLI against a small local HTTP server; `--wait` over faked events."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import uvicorn
from inspect_helpers import CliRunner, EventWriter, cli_command, cli_env, log, running_cli, store_of
from serving import refusing_port, rows, wait_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edgecli import listening
from edgecli.config import DEFAULT_JWT_SECRET, Config
from edgecli.events import Event
from edgecli.store.writer import StoreWriter

pytestmark = pytest.mark.timeout(90)  # each test runs the CLI, a fresh Python, several times


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body.decode(),
        },
        headers={"x-request-id": request.headers.get("x-request-id", "server-made"), "x-custom": "yes"},
    )


async def broken(request: Request) -> Response:
    return JSONResponse({"code": "WORKER_ERROR", "message": "boom"}, status_code=500)


async def limit(request: Request) -> Response:
    return JSONResponse({"code": "WORKER_LIMIT", "message": "memory"}, status_code=546)


async def text(request: Request) -> Response:
    return PlainTextResponse("plain words")


async def long(request: Request) -> Response:
    return PlainTextResponse("".join(f"line {i}\n" for i in range(100_000)))  # far more than a pipe holds


APP = Starlette(
    routes=[
        Route("/functions/v1/broken", broken, methods=["GET", "POST"]),
        Route("/functions/v1/text", text, methods=["POST"]),
        Route("/functions/v1/long", long, methods=["POST"]),
        Route("/functions/v1/limit", limit, methods=["POST"]),
        Route("/functions/v1/echo", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/functions/v1/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The echo app served by uvicorn in a thread on a free port, stopped after the module's tests."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(APP, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="the test server")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _echoed(stdout: str) -> dict[str, object]:
    """The echo body printed after the status line and headers (pretty-printed JSON)."""
    return dict(json.loads(stdout[stdout.index("\n{") :]))


def test_json_data_is_posted_with_the_anon_key(cli: CliRunner, server_url: str) -> None:
    result = cli("invoke", "echo", "--url", server_url, "--data", '{"name": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP 200 OK\n")
    assert "x-custom: yes" in result.stdout and "x-request-id: " in result.stdout
    assert "\nx-custom: yes\n" in result.stdout  # as HTTP writes a header: not padded to the longest
    assert '\n  "method": "POST",\n' in result.stdout  # pretty-printed
    echoed = _echoed(result.stdout)
    headers = echoed["headers"]
    assert isinstance(headers, dict)
    assert echoed["body"] == '{"name": "Ada"}' and headers["content-type"] == "application/json"
    token = headers["authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, DEFAULT_JWT_SECRET, algorithms=["HS256"])["role"] == "anon"


def test_service_role_key(cli: CliRunner, server_url: str) -> None:
    result = cli("invoke", "echo", "--url", server_url, "--service-role")
    headers = _echoed(result.stdout)["headers"]
    assert isinstance(headers, dict)
    token = headers["authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, DEFAULT_JWT_SECRET, algorithms=["HS256"])["role"] == "service_role"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("publishable", "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"),
        ("secret", "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"),
    ],
)
def test_new_api_keys(cli: CliRunner, server_url: str, key: str, expected: str) -> None:
    headers = _echoed(cli("invoke", "echo", "--url", server_url, "--key", key).stdout)["headers"]
    assert isinstance(headers, dict)
    assert headers["apikey"] == expected and headers["authorization"] == f"Bearer {expected}"


def test_an_unknown_key_is_bad_usage(cli: CliRunner, server_url: str) -> None:
    result = cli("invoke", "echo", "--url", server_url, "--key", "admin")
    assert result.returncode == 2 and "allowed: anon, service_role, publishable, secret" in result.stderr


def test_data_from_a_file_and_from_stdin(cli: CliRunner, server_url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"from": "file"}')
    from_file = _echoed(cli("invoke", "echo", "--url", server_url, "--data", f"@{body}").stdout)
    assert from_file["body"] == '{"from": "file"}'
    from_stdin = cli("invoke", "echo", "--url", server_url, "--data", "-", stdin="just text")
    echoed = _echoed(from_stdin.stdout)
    headers = echoed["headers"]
    assert isinstance(headers, dict)
    assert echoed["body"] == "just text" and headers["content-type"].startswith("text/plain")
    missing = cli("invoke", "echo", "--url", server_url, "--data", "@nope.json")
    assert missing.returncode == 2 and "nope.json" in missing.stderr and "Traceback" not in missing.stderr
    broken = cli("invoke", "echo", "--url", server_url, "--data", '{"name": }')
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr


def test_method_headers_and_sub_path(cli: CliRunner, server_url: str) -> None:
    result = cli(
        "invoke", "echo", "--url", server_url, "-X", "put", "-H", "x-mode: test", "-H", "Accept:*/*",
        "--path", "/a/b?x=1",
    )  # fmt: skip
    echoed = _echoed(result.stdout)
    headers = echoed["headers"]
    assert isinstance(headers, dict)
    assert (
        echoed["method"] == "PUT" and echoed["path"] == "/functions/v1/echo/a/b" and echoed["query"] == "x=1"
    )
    assert headers["x-mode"] == "test" and headers["accept"] == "*/*"
    bad = cli("invoke", "echo", "--url", server_url, "-H", "no colon here")
    assert bad.returncode == 2 and "'Name: value'" in bad.stderr


def test_a_reader_that_stops_early_is_no_failure(project: Path, server_url: str) -> None:
    """`edgecli invoke long | head -1`: exit 0 once the reader has all it wanted, and no traceback."""
    proc = subprocess.Popen(
        cli_command("invoke", "long", "--url", server_url),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline().startswith("HTTP 200")
        proc.stdout.close()  # as `head -1` leaves
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


def test_exit_status_follows_the_response(cli: CliRunner, server_url: str) -> None:
    failed = cli("invoke", "broken", "--url", server_url)
    assert failed.returncode == 1
    assert failed.stdout.startswith("HTTP 500 Internal Server Error") and "WORKER_ERROR" in failed.stdout
    missing = cli("invoke", "nothing-here", "--url", server_url)
    assert missing.returncode == 1 and missing.stdout.startswith("HTTP 404")
    limited = cli("invoke", "limit", "--url", server_url)
    assert limited.returncode == 1 and limited.stdout.startswith("HTTP 546 Resource Limit\n")
    plain = cli("invoke", "text", "--url", server_url)
    assert plain.returncode == 0 and plain.stdout.rstrip().endswith("plain words")


def test_json_output(cli: CliRunner, server_url: str) -> None:
    result = cli("invoke", "echo", "--url", server_url, "--json", "-H", "x-request-id: mine")
    record = json.loads(result.stdout)
    assert record["status"] == 200 and record["request"] == "mine"
    assert record["body"]["method"] == "POST" and record["headers"]["x-custom"] == "yes"


def test_default_url_comes_from_config_and_refused_connections_say_what_to_do(
    cli: CliRunner, project: Path
) -> None:
    with refusing_port() as port:
        (project / "supabase" / "config.toml").write_text(f"[api]\nport = {port}\n")
        result = cli("invoke", "hello")
    assert result.returncode == 1
    assert f"nothing answers on http://127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    assert "`edgecli serve`" in result.stderr and "--port N" in result.stderr and "--url URL" in result.stderr


def test_invoke_calls_the_serve_recorded_in_the_project(
    cli: CliRunner, project: Path, server_url: str
) -> None:
    # What a running `edgecli serve --port N` leaves behind (tests/test_listening.py covers serve's side).
    with refusing_port() as port:  # the configured port: nothing answers there
        (project / "supabase" / "config.toml").write_text(f"[api]\nport = {port}\n")
        listening.record(
            Config(project_dir=project).state_dir, listening.Listening(server_url, os.getpid(), ("echo",))
        )
        result = cli("invoke", "echo")
    assert result.returncode == 0, result.stderr
    assert _echoed(result.stdout)["path"] == "/functions/v1/echo"


def test_port_means_this_machine(cli: CliRunner, server_url: str) -> None:
    port = server_url.rsplit(":", 1)[1]
    result = cli("invoke", "echo", "--port", port)
    assert result.returncode == 0, result.stderr
    both = cli("invoke", "echo", "--port", port, "--url", server_url)
    assert both.returncode == 2 and "either --url or --port" in both.stderr


def test_invoke_does_not_resolve_secrets(cli: CliRunner, project: Path, server_url: str) -> None:
    config = project / "supabase" / "config.toml"
    config.write_text(
        '[api]\nport = 54321\n\n[edge_runtime.secrets]\napi_key = "env(EDGECLI_TEST_UNSET_KEY)"\n'
    )
    result = cli("invoke", "echo", "--url", server_url)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["../etc", "a/b", "echo?x=1", ""])
def test_a_name_that_is_not_a_function_name_is_refused(cli: CliRunner, server_url: str, name: str) -> None:
    result = cli("invoke", name, "--url", server_url)
    assert result.returncode == 2 and "is not a function name" in result.stderr and "--path" in result.stderr


# --- --wait: the server here is a stand-in, so the request's events are written to the store by hand. ---


def _task_events(request: str, outcomes: dict[str, str]) -> list[Event]:
    base = {"function": "echo", "worker": "w1", "request": request}
    events = [Event("task_start", **base, task=t, fields={"name": f"job{t}"}) for t in outcomes]
    events.append(
        Event("request", **base, fields={"method": "POST", "path": "/echo", "status": 200, "duration_ms": 2})
    )
    for task, status in outcomes.items():
        events.append(log(f"working in {task}", **base, task=task))
        error = "Traceback (most recent call last):\nRuntimeError: nope" if status == "failed" else None
        fields = {"name": f"job{task}", "status": status, "duration_ms": 5, "error": error, "reason": None}
        events.append(Event("task_end", **base, task=task, fields=fields))
    return events


def test_wait_prints_task_logs_and_a_summary(
    cli: CliRunner, server_url: str, write_events: EventWriter
) -> None:
    write_events(_task_events("req-w1", {"t-1": "completed", "t-2": "completed", "t-3": "failed"}))
    write_events([log("someone else's request", request="req-other", task="t-9")])
    result = cli("invoke", "echo", "--url", server_url, "--wait", "-H", "x-request-id: req-w1")
    assert result.returncode == 1  # a task failed
    assert "working in t-1" in result.stdout and "working in t-3" in result.stdout
    assert "RuntimeError: nope" in result.stdout and "someone else's" not in result.stdout
    assert result.stdout.rstrip().endswith("3 tasks: 2 completed, 1 failed")


def test_wait_exits_one_when_a_task_was_cancelled(
    cli: CliRunner, server_url: str, write_events: EventWriter
) -> None:
    write_events(_task_events("req-wc", {"t-1": "completed", "t-2": "cancelled"}))
    result = cli("invoke", "echo", "--url", server_url, "--wait", "-H", "x-request-id: req-wc")
    assert result.returncode == 1
    assert result.stdout.rstrip().endswith("2 tasks: 1 completed, 1 cancelled")


def test_wait_exit_zero_when_tasks_completed_and_json_summary(
    cli: CliRunner, server_url: str, write_events: EventWriter
) -> None:
    write_events(_task_events("req-w2", {"t-1": "completed"}))
    result = cli("invoke", "echo", "--url", server_url, "--wait", "--json", "-H", "x-request-id: req-w2")
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["status"] == 200
    assert [r["kind"] for r in records[1:-1]] == ["task_start", "request", "log", "task_end"]
    assert records[-1] == {
        "summary": "tasks",
        "request": "req-w2",
        "tasks": 1,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "running": 0,
        "settled": True,
    }


def test_wait_follows_tasks_as_they_settle(project: Path, server_url: str, write_events: EventWriter) -> None:
    write_events(_task_events("req-w3", {"t-1": "completed"})[:2])  # started, request done; still running
    with running_cli(
        project, "invoke", "echo", "--url", server_url, "--wait", "-H", "x-request-id: req-w3"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "task jobt-1 started" in line:
                break
        writer = StoreWriter(store_of(project), 1000, 1 << 30)
        for event in _task_events("req-w3", {"t-1": "completed"})[2:]:
            writer.write(rows(event))
        writer.close()
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read()
        assert "working in t-1" in rest and rest.rstrip().endswith("1 task: 1 completed")


def test_wait_times_out_with_tasks_still_running(
    cli: CliRunner, server_url: str, write_events: EventWriter
) -> None:
    write_events(_task_events("req-w4", {"t-1": "completed"})[:2])
    result = cli(
        "invoke", "echo", "--url", server_url, "--wait", "--timeout", "1", "-H", "x-request-id: req-w4"
    )
    assert result.returncode == 1
    assert result.stdout.rstrip().endswith("timed out after 1 s: 1 task: 1 still running")
