"""`EdgeServer`: a real `edgecli serve` for a project, on a free port, with its own event store.

serve is started with `--port 0`: the system picks a free port as serve binds it (no other process can
take it in between), and serve records where it listens in the state directory (edgecli/listening.py).

    with EdgeServer("path/to/project") as edge:
        r = edge.invoke("hello", json={"name": "x"})
        tasks = edge.wait_for_tasks(r)

The pytest plugin (edgecli/testing/plugin.py) shares one per distinct settings across a session and
gives each test its own view of the records (`begin_test` / `end_test`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecli import listening
from edgecli.testing.process import ServeProcess
from edgecli.testing.records import EventLog, Record, TaskResult
from edgecli.testing.settings import ServeSettings

if TYPE_CHECKING:
    import httpx

Role = Literal["anon", "service_role"]
START_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 10.0  # how long `logs` / `events` wait for the records of requests already answered
LEAK_GRACE_S = 3.0  # how long the leak check waits to learn how tasks running at the test's end ended
CLIENT_TIMEOUT_S = 180.0  # beyond serve's own idle timeout (150 s)


class EdgeServerError(RuntimeError):
    """The server could not be started, or went away."""


class EdgeServer:
    def __init__(
        self,
        workdir: str | Path = ".",
        *,
        policy: str | None = None,
        verify_jwt: bool | None = None,
        env: Mapping[str, str] | None = None,
        functions: Sequence[str] | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        """`state_dir`: where serve keeps its event store and output (default: a temporary directory,
        removed on exit). Never the project's supabase/.temp."""
        self.settings = ServeSettings.make(workdir, policy, verify_jwt, env, functions)
        self._own_state = state_dir is None  # then start() makes one (Path() until then), stop() removes it
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else Path()
        config = self.settings.config()  # bad config is an error here, before any process starts
        self._secret = config.jwt_secret
        self._stop_timeout = float(config.limits.graceful_exit_timeout_sec) + 15.0
        self.anon_key = _key(self._secret, "anon")
        self.service_role_key = _key(self._secret, "service_role")
        self._log = EventLog()
        self._process: ServeProcess | None = None
        self._client: httpx.Client | None = None
        self._expected: list[str] = []  # request ids invoked in this scope
        self._allow_pending = False
        self.url = ""

    # -- life ------------------------------------------------------------------------------------------

    def start(self) -> EdgeServer:
        if self._own_state:
            self.state_dir = Path(tempfile.mkdtemp(prefix="edgecli-test-")).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._spawn()
        try:
            self._wait_until_answering()
            assert self._process is not None
            self._process.remember_family()
        except BaseException as exc:
            try:
                self._stop(exited=True)
            except AssertionError as leftovers:
                exc.add_note(str(leftovers))
            raise
        self.begin_test()
        return self

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "edgecli", *self.settings.serve_args(0, self.state_dir)]
        self._log = EventLog()
        self._process = ServeProcess(
            cmd, self.settings.serve_env(self.state_dir), self.state_dir / "serve.err", self._log
        )
        self._process.start()

    def _listening_url(self) -> str | None:
        """Where this serve listens, once it has recorded that (it records it once it listens)."""
        assert self._process is not None
        pid = self._process.pid
        return next((here.url for here in listening.running(self.state_dir) if here.pid == pid), None)

    def _wait_until_answering(self) -> None:
        """Until serve listens, answers a probe, and its record of that probe has arrived: then the records
        work, and the probe's is known before the first test's records begin."""
        # httpx is imported while serve boots, not before: the first test waits for the slower of the two.
        import httpx

        assert self._process is not None
        probe = f"edgecli-testing-probe-{uuid.uuid4()}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            status = self._process.exit_status()
            if status is not None:
                raise EdgeServerError(
                    f"edgecli serve for {self.settings.describe()} exited with status {status} before it "
                    f"answered:\n{self._process.stderr().strip()}"
                )
            if self._client is None and (url := self._listening_url()) is not None:
                self.url = url
                timeout = httpx.Timeout(CLIENT_TIMEOUT_S, connect=10.0)
                self._client = httpx.Client(base_url=url, timeout=timeout)
            if self._client is not None:
                try:
                    self._client.get("/functions/v1/", headers={"x-request-id": probe}, timeout=1.0)
                    break
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise EdgeServerError(
                    f"edgecli serve for {self.settings.describe()} did not answer within "
                    f"{START_TIMEOUT_S:g} s:\n{self._process.stderr().strip()}"
                )
            time.sleep(0.01)
        if not self._log.wait(self._log.answered([probe]), max(deadline - time.monotonic(), SYNC_TIMEOUT_S)):
            raise EdgeServerError(
                f"edgecli serve for {self.settings.describe()} answered, but printed no record of it:\n"
                + "\n".join(self._log.output)
            )

    def stop(self) -> None:
        """Stop serve (it drains background tasks first); AssertionError if a process is left behind, or
        if serve had stopped by itself."""
        self._stop(exited=False)

    def _stop(self, *, exited: bool) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        try:
            if process is not None:
                process.stop(self._stop_timeout, exited=exited)
        finally:
            if self._own_state and self.state_dir != Path():
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> EdgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EdgeServer {self.url or '(not started)'} serving {self.settings.describe()}>"

    def alive(self) -> bool:
        return self._process is not None and self._process.exit_status() is None

    # -- requests --------------------------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        *,
        json: Any = None,
        data: str | bytes | Mapping[str, Any] | None = None,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
        role: Role | None = "anon",
        claims: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Call function `name` (at `path` below it) with the anon key, the `role` key, no key
        (`role=None`), or a JWT signed with `claims`. Returns the response once it is complete."""
        import httpx

        token = self._token(role, claims)
        client = self._live_client()
        sent = httpx.Headers(headers or {})
        if token is not None and "authorization" not in sent:
            sent["authorization"] = f"Bearer {token}"
        if "x-request-id" not in sent:
            sent["x-request-id"] = str(uuid.uuid4())
        self._expected.append(sent["x-request-id"])
        body: dict[str, Any] = {"json": json} if json is not None else {}
        if isinstance(data, str | bytes):
            body["content"] = data
        elif data is not None:
            body["data"] = data
        if path and not path.startswith("/"):
            path = "/" + path
        try:
            return client.request(method, f"/functions/v1/{name}{path}", headers=sent, **body)
        except httpx.TransportError:
            self._expected.remove(sent["x-request-id"])  # unanswered: `events` must not wait for it
            self._check_alive()
            raise

    def _token(self, role: Role | None, claims: Mapping[str, Any] | None) -> str | None:
        if claims is not None:
            import jwt

            with warnings.catch_warnings():  # a short project secret is the config's business, not the test's
                warnings.simplefilter("ignore")
                return jwt.encode(dict(claims), self._secret, algorithm="HS256")
        if role is None:
            return None
        keys = {"anon": self.anon_key, "service_role": self.service_role_key}
        if role not in keys:
            raise ValueError(f"role={role!r}: use 'anon', 'service_role', or None to send no key")
        return keys[role]

    # -- what happened ---------------------------------------------------------------------------------

    def wait_for_tasks(
        self, response_or_request_id: httpx.Response | str, timeout: float = 10
    ) -> list[TaskResult]:
        """The request's background tasks, once every one of them has ended (in the order they started).
        AssertionError naming the tasks still running if that takes longer than `timeout` seconds."""
        __tracebackhide__ = True  # pytest shows the failure at the test's own line, not in here
        request = _request_id(response_or_request_id)
        if self._log.wait(self._log.settled(request), timeout):
            return self._log.tasks(request)
        self._check_alive()
        if not self._log.known(request):
            raise AssertionError(
                f"no record of request {request} after {timeout:g} s: it never reached this server, or "
                "is still being answered"
            )
        running = [t for t in self._log.tasks(request) if t.status == "running"]
        if not running:
            raise AssertionError(f"request {request} was not answered within {timeout:g} s")
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for the background tasks of request {request}; "
            f"still running: {describe_tasks(running)}"
        )

    def logs(self, response_or_request_id: httpx.Response | str) -> list[Record]:
        """The request's records (its tasks' included), in the `edgecli logs --json` format."""
        request = _request_id(response_or_request_id)
        self._log.wait(self._log.answered([request]), SYNC_TIMEOUT_S)
        return self._log.of_request(request)

    def events(self, **filters: Any) -> list[Record]:
        """This test's records (`function`, `request`, `task`, `level` and up, `kind` filter them): those
        of its requests, and the server's own (boot, shutdown...) recorded since it began."""
        self._log.wait(self._log.answered(self._expected), SYNC_TIMEOUT_S)
        return self._log.select(**filters)

    def allow_pending(self) -> None:
        """Let this test end with background tasks still running (the leak check passes them)."""
        self._allow_pending = True

    # -- the plugin's per-test view --------------------------------------------------------------------

    def begin_test(self) -> None:
        """From now on, `logs`/`events` and the leak check see only what is asked from here on."""
        self._check_alive()
        self._log.begin_scope()
        self._expected = []
        self._allow_pending = False

    def end_test(self, *, check: bool) -> list[TaskResult]:
        """Wait for the records of this test's requests (so none reach the next test), and with `check`,
        return the tasks of its requests still running when it ended (none after `allow_pending()`)."""
        ended = time.time()
        self._log.wait(self._log.answered(self._expected), SYNC_TIMEOUT_S)
        if not check or self._allow_pending or not self.alive():
            return []
        if self._log.running_at(ended):
            self._log.wait(self._log.quiet(), LEAK_GRACE_S)
        return self._log.running_at(ended)

    def _live_client(self) -> httpx.Client:
        if self._client is None:
            raise EdgeServerError("this EdgeServer is not running: use it as `with EdgeServer(...) as edge:`")
        return self._client

    def _check_alive(self) -> None:
        process = self._process
        if process is not None and process.exit_status() is not None:
            raise EdgeServerError(
                f"edgecli serve for {self.settings.describe()} exited with status {process.exit_status()}:"
                f"\n{process.stderr().strip()[-3000:]}"
            )


def describe_tasks(tasks: list[TaskResult]) -> str:
    return ", ".join(f"{t.name} (task {t.task})" for t in tasks)


def _request_id(response_or_request_id: httpx.Response | str) -> str:
    if isinstance(response_or_request_id, str):
        return response_or_request_id
    request_id = response_or_request_id.headers.get(
        "x-request-id"
    ) or response_or_request_id.request.headers.get("x-request-id")
    if not request_id:
        raise ValueError("that response has no x-request-id header: was it answered by edgecli serve?")
    return str(request_id)


def _key(secret: str, role: str) -> str:
    from edgecli.host.auth import make_key

    return make_key(secret, role)
