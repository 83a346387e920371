"""`edgecli serve`: one class owns the run — startup → serve until a signal → drain → exit.

Signal handlers only set a flag (uvicorn's `should_exit`); the drain happens in `run()`, in order: stop
accepting, let in-flight responses finish, let background tasks finish within graceful_exit_timeout_sec,
stop the fork server (its workers die with it), flush the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn

from edgecli.config import Config, Overrides
from edgecli.console import EventPrinter, Output, print_banner
from edgecli.errors import EdgecliError
from edgecli.events import Event, EventSink
from edgecli.host.auth import Verifier, make_key
from edgecli.host.env import build_function_env, host_env
from edgecli.host.http import HttpProtocol
from edgecli.host.registry import Registry
from edgecli.host.relay import Relay
from edgecli.host.reloader import Reloader
from edgecli.host.store_feed import StoreFeed
from edgecli.host.supervisor import Supervisor
from edgecli.host.worker import KILL_MARGIN

WARM_WAIT = 5.0


class Hub:
    """Fans every event out to the sinks (terminal, store). A failing sink never stops serving."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # pragma: no cover - a broken terminal must not break requests
                print(f"edgecli: cannot record an event: {exc}", file=sys.__stderr__)


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # ServeCommand installs its own handlers; uvicorn's would re-raise the signal after shutdown.
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Listening stops first; then the workers drain while uvicorn waits for the responses in flight,
        # so that a request the drain's deadline cuts still gets an answer saying so.
        for server in self.servers:
            server.close()
        self.on_shutdown()
        await super().shutdown(sockets)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a background future's outcome as seen: Ctrl-C during start-up cancels the warm-up."""
    if not future.cancelled():
        future.exception()


def longest_grace(config: Config) -> float:
    graces = [function.limits.graceful_exit_timeout_sec for function in config.functions.values()]
    return max([config.limits.graceful_exit_timeout_sec, *graces])


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EdgecliError(
            f"cannot listen on {host}:{port}: {exc.strerror}. Another server (maybe another `edgecli serve` "
            "or `supabase start`) uses that port: stop it, or pick another with `edgecli serve --port N`."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class ServeCommand:
    def __init__(
        self, config: Config, output: Output, sock: socket.socket, overrides: Overrides | None = None
    ) -> None:
        self.config = config  # as serve started; the registry holds the config in force
        self.overrides = overrides or Overrides()  # the reloader reads config.toml again with these
        self.output = output
        self.sock = sock
        self.store = StoreFeed(config.events_db, config.event_retention)
        self.printer = EventPrinter(output, json_output=config.json_output, functions=list(config.functions))
        self.hub = Hub([self.printer, self.store])
        self.registry = Registry(config, host_env(os.environ))
        self.supervisor = Supervisor(self.hub.emit, self.registry.worker_spec)
        self.server: _Uvicorn | None = None
        self.stopping = False
        self._warming: asyncio.Future[Any] | None = None
        self.reloader: Reloader | None = None
        self._drain: asyncio.Future[None] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            await self.startup()
            if not self.stopping:
                assert self.server is not None
                await self.server.serve(sockets=[self.sock])
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        config = self.config
        await self.supervisor.start()
        self.registry.open(self.supervisor)
        relay = Relay(
            self.registry.pools, Verifier(config.jwt_secret), self.hub.emit, verify_jwt=config.verify_jwt
        )
        self.banner()
        uv_config = uvicorn.Config(
            relay,
            http=HttpProtocol,
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            # Longer than any worker's drain: the relay answers the requests a drain cuts.
            timeout_graceful_shutdown=int(longest_grace(config) + KILL_MARGIN + 1),
        )
        self.server = _Uvicorn(uv_config, self.begin_drain)
        if config.reload:  # watching starts before warming: an edit made meanwhile is not missed
            self.reloader = Reloader(self.registry, self.overrides, self.hub.emit)
            self.reloader.start()
        # Boot one worker per function now: the first request is fast and boot errors show at once.
        # A module that hangs at import must not hold up serving: give up waiting after WARM_WAIT.
        self._warming = asyncio.ensure_future(
            asyncio.gather(*(pool.warm() for pool in self.registry.pools.values()))
        )
        self._warming.add_done_callback(_retrieved)
        await asyncio.wait([self._warming], timeout=WARM_WAIT)

    def banner(self) -> None:
        config = self.config
        self.printer.flush()  # events of the start-up so far print above the banner, as they happened
        notes: list[str] = list(config.warnings) + list(config.skipped)
        for function in config.functions.values():
            notes.extend(build_function_env(config, function).warnings)
        # With --json, stdout carries only event records (for piping); the banner goes to stderr.
        banner_output = (
            Output(out=self.output.err, err=self.output.err) if config.json_output else self.output
        )
        print_banner(
            banner_output,
            project=config.project_id or config.project_dir.name or str(config.project_dir),
            policy=config.policy,
            functions=[(name, f"{config.base_url}/functions/v1/{name}") for name in config.functions],
            anon_key=make_key(config.jwt_secret, "anon"),
            service_role_key=make_key(config.jwt_secret, "service_role"),
            notes=list(dict.fromkeys(notes)),
        )

    def request_stop(self, sig: int) -> None:
        if self.stopping and sig == signal.SIGINT and self.server is not None:
            self.server.force_exit = True  # a second Ctrl-C: do not wait for open connections
        if self.stopping and sig == signal.SIGINT:
            self.supervisor.hurry()  # nor for background tasks to drain
        self.stopping = True
        if self._warming is not None:
            self._warming.cancel()
        if self.server is not None:
            self.server.should_exit = True

    def begin_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self.drain())

    async def drain(self) -> None:
        """No more reloads and no new workers; every worker drains (see Supervisor.shutdown)."""
        if self.reloader is not None:
            await self.reloader.stop()
        self.registry.close()
        await self.supervisor.shutdown()

    async def shutdown(self) -> None:
        self.begin_drain()
        assert self._drain is not None
        await self._drain
        self.sock.close()
        self.store.close()
        self.printer.flush()


def serve(config: Config, output: Output, overrides: Overrides | None = None) -> int:
    sock = bind(config.host, config.port)
    return run(ServeCommand(config, output, sock, overrides).run())


def run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on Linux/macOS
        return asyncio.run(coro)
    return int(uvloop.run(coro))
