"""The pytest plugin (entry point `edgecli` in the `pytest11` group): the `edge` fixture and marker.

    def test_hello(edge):
        assert edge.invoke("hello", json={"name": "x"}).status_code == 200

One real `edgecli serve` per distinct settings (the marker's, over the `edge_workdir` ini option, over
the project found from the rootdir) is started the first time a test asks for it and stopped at the end
of the session. Each test gets that server with a fresh view of the records, and fails if its requests
leave background tasks running (unless it calls `edge.allow_pending()`).

Loaded by every pytest run where edgecli is installed, so it imports the server side only when a test
asks for `edge`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from edgecli.testing.server import EdgeServer
    from edgecli.testing.settings import ServeSettings

MARKER_KWARGS = ("policy", "verify_jwt", "env", "workdir")
_CALL_PASSED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "edge_workdir",
        "edgecli.testing: the project the `edge` fixture serves (holds supabase/); relative to the rootdir",
        default=None,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "edge(policy=None, verify_jwt=None, env=None, workdir=None): settings of the `edgecli serve` the "
        "`edge` fixture gives this test (tests with equal settings share one server)",
    )


# An old-style hook wrapper: pytest loads this plugin in every run where edgecli is installed, whatever
# pytest version the project uses.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if call.when == "call":
        item.stash[_CALL_PASSED] = bool(outcome.get_result().passed)  # type: ignore[attr-defined]


class _Servers:
    """The session's servers, one per distinct settings, each with its state in pytest's temp dir."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.servers: dict[ServeSettings, EdgeServer] = {}
        self.failed: dict[ServeSettings, str] = {}  # a server that would not start is not tried again

    def get(self, settings: ServeSettings) -> EdgeServer:
        from edgecli.testing.server import EdgeServer, EdgeServerError
        from edgecli.testing.settings import SettingsError

        if settings in self.failed:
            pytest.fail(self.failed[settings], pytrace=False)
        server = self.servers.get(settings)
        if server is None:
            try:
                server = EdgeServer(
                    settings.workdir,
                    policy=settings.policy,
                    verify_jwt=settings.verify_jwt,
                    env=dict(settings.env),
                    functions=settings.functions,
                    state_dir=self.tmp.mktemp("edgecli-serve"),
                )
                server.start()
            except (EdgeServerError, SettingsError) as exc:
                self.failed[settings] = str(exc)
                pytest.fail(str(exc), pytrace=False)
            self.servers[settings] = server
        try:
            server.begin_test()
        except EdgeServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        return server

    def stop_all(self) -> None:
        problems = []
        for settings, server in self.servers.items():
            try:
                server.stop()
            except BaseException as exc:
                problems.append(f"edgecli serve for {settings.describe()}: {exc}")
        if problems:
            raise AssertionError("\n".join(problems))


@pytest.fixture(scope="session")
def _edge_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    servers = _Servers(tmp_path_factory)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def edge(request: pytest.FixtureRequest, _edge_servers: _Servers) -> Iterator[EdgeServer]:
    """A real `edgecli serve` for the project, shared by the tests with the same settings."""
    server = _edge_servers.get(_settings(request))
    yield server
    # Only a test body that passed is checked for leaks: a failed one has its own report. An interrupted
    # one (Ctrl-C) has no report at all, and the session is ending: nothing to wait for.
    outcome = request.node.stash.get(_CALL_PASSED, None)
    if outcome is None:
        return
    leaks = server.end_test(check=outcome)
    if leaks:
        from edgecli.testing.server import describe_tasks

        pytest.fail(
            f"{request.node.name} ended with background tasks of its requests still running: "
            f"{describe_tasks(leaks)}. Wait for them with edge.wait_for_tasks(response), or call "
            "edge.allow_pending() in the test to let them run on.",
            pytrace=False,
        )


def _settings(request: pytest.FixtureRequest) -> ServeSettings:
    from edgecli.testing.settings import ServeSettings, SettingsError

    options = _marker_options(request)
    try:
        return ServeSettings.make(
            _workdir(request, options.pop("workdir", None)),
            policy=options.get("policy"),
            verify_jwt=options.get("verify_jwt"),
            env=options.get("env"),
        )
    except SettingsError as exc:
        pytest.fail(f"{request.node.nodeid}: {exc}", pytrace=False)


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("edge")
    if marker is None:
        return {}
    unknown = sorted(set(marker.kwargs) - set(MARKER_KWARGS))
    if marker.args or unknown:
        pytest.fail(
            f"{request.node.nodeid}: @pytest.mark.edge takes only the keyword arguments "
            f"{', '.join(MARKER_KWARGS)} (got {', '.join(unknown) or 'positional arguments'})",
            pytrace=False,
        )
    return dict(marker.kwargs)


def _workdir(request: pytest.FixtureRequest, given: str | Path | None) -> Path:
    """The marker's workdir, else the ini option, else the rootdir (the project is found from there up)."""
    rootdir = Path(request.config.rootpath)
    chosen = given if given is not None else request.config.getini("edge_workdir") or None
    return rootdir / Path(chosen) if chosen is not None else rootdir
