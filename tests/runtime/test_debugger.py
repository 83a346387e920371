"""`serve --inspect`: a debugger attaches over DAP (as VS Code does) and breakpoint() stops there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import Served, free_port, make_project, wait_until

from edgecli.config import Overrides, load_config

HELLO = """
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    answer = 42
    breakpoint()
    return JSONResponse({"answer": answer})

serve(handler)
"""


class Dap:
    """Just enough of the Debug Adapter Protocol to attach, continue and hear what happened."""

    def __init__(self, port: int) -> None:
        # The worker listens once it starts booting; a probe connection would take the one client slot.
        self.sock = wait_until(lambda: _connect(port), timeout=30, what="the debugger's port")
        self.buffer = b""
        self.seq = 0
        self.unread: list[dict[str, Any]] = []  # messages that came before the one waited for

    def send(self, command: str, **arguments: Any) -> None:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command, "arguments": arguments})
        self.sock.sendall(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())

    def receive(self) -> dict[str, Any]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = int(head.split(b":")[1])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        return dict(json.loads(rest[:length]))

    def wait_for(self, kind: str, name: str) -> dict[str, Any]:
        """The first message of that kind and name, earlier ones included: debugpy may send an event
        before the response to the request that caused it."""

        def matches(message: dict[str, Any]) -> bool:
            return message.get("type") == kind and name in (message.get("event"), message.get("command"))

        for message in self.unread:
            if matches(message):
                self.unread.remove(message)
                return message
        while not matches(message := self.receive()):
            self.unread.append(message)
        return message


@pytest.mark.timeout(60)
def test_breakpoint_without_a_debugger_says_how_to_get_one(tmp_path: Path) -> None:
    with Served(make_project(tmp_path, {"hello": HELLO})) as srv:
        assert srv.get("hello").json() == {"answer": 42}  # not a 500 BdbQuit
        said = srv.wait_event(kind="log", level="warning")
    assert said["message"].startswith("breakpoint() at index.py line 7 skipped: no debugger is attached")
    assert "edgecli serve --inspect NAME" in said["message"]


def test_inspected_functions_run_without_limits(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"hello": HELLO})
    config = load_config(project, Overrides(only=("hello",), inspect="127.0.0.1:5678"))
    limits = config.functions["hello"].limits
    assert (limits.max_parallelism, limits.wall_clock_limit_sec, limits.cpu_time_hard_limit_ms) == (1, 0, 0)
    assert limits.memory_limit_mb == 0 and config.inspect == "127.0.0.1:5678"


@pytest.mark.timeout(120)  # debugpy is slow to attach on a loaded machine
@pytest.mark.parametrize("mode", ["run", "wait", "brk"])
def test_breakpoint_stops_the_request_in_an_attached_debugger(tmp_path: Path, mode: str) -> None:
    debug_port = free_port()
    project = make_project(tmp_path, {"hello": HELLO})
    with Served(project, f"--inspect=127.0.0.1:{debug_port}", "--inspect-mode", mode, "hello") as srv:
        if mode == "run":  # the others boot only once a debugger is attached
            srv.wait_event(kind="boot", function="hello", timeout=30)
        dap = Dap(debug_port)
        dap.send("initialize", adapterID="edgecli-test", clientID="test")
        dap.wait_for("response", "initialize")
        dap.send("attach", justMyCode=True)
        dap.wait_for("event", "initialized")
        dap.send("configurationDone")
        # Until debugpy has answered, a breakpoint() in "run" mode finds no client and is passed by.
        dap.wait_for("response", "configurationDone")
        if mode == "brk":  # stopped before the module runs
            at_boot = dap.wait_for("event", "stopped")
            dap.send("continue", threadId=at_boot["body"]["threadId"])
        answers: list[httpx.Response] = []
        calling = threading.Thread(target=lambda: answers.append(srv.get("hello")))
        calling.start()
        stopped = dap.wait_for("event", "stopped")  # at breakpoint() in the handler
        assert not answers  # the request waits at the breakpoint
        dap.send("continue", threadId=stopped["body"]["threadId"])
        calling.join(60)
        assert answers and answers[0].json() == {"answer": 42}
        dap.send("disconnect")
        dap.sock.close()
        wait_until(lambda: srv.events(kind="request", status=200), what="the request to finish")


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=60)
    except ConnectionRefusedError:
        return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--inspect"], "--inspect debugs one function: name it"),
        (["--inspect", "a", "b"], "--inspect debugs one function: name it"),
        (["--inspect=nowhere", "hello"], "--inspect=nowhere is not HOST:PORT"),
        (["--inspect", "--inspect-mode", "later", "hello"], "--inspect-mode 'later' is not a mode"),
        (["--inspect", "--policy", "oneshot", "hello"], "leave out --policy"),
    ],
)
def test_inspect_usage_errors(tmp_path: Path, args: list[str], says: str) -> None:
    project = make_project(tmp_path, {"hello": HELLO})
    result = subprocess.run(
        [sys.executable, "-m", "edgecli", "serve", "--workdir", str(project), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
