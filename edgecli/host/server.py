"""`edgecli serve`: one class owns the run — startup → serve until a signal → drain → exit.

Signal handlers only set a flag (uvicorn's `should_exit`); the drain happens in `run()`, in order: stop
accepting, let in-flight responses finish, let background tasks finish within graceful_exit_timeout_sec,
stop the fork server (its workers die with it), flush the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import uvicorn

from edgecli import events, listening
from edgecli.config import Config, Overrides
from edgecli.console import Output, print_banner, print_draining
from edgecli.errors import EdgecliError
from edgecli.events import Event, EventSink, Level
from edgecli.host import replicas
from edgecli.host.auth import Verifier, make_key
from edgecli.host.env import build_function_env, host_env, injected_env
from edgecli.host.health import HEALTH_PATH, Health
from edgecli.host.lending import LENT_MODULE, Lender, LendingProtocol
from edgecli.host.registry import Registry
from edgecli.host.relay import Relay
from edgecli.host.reloader import Reloader
from edgecli.host.signing_keys import PUBLISHABLE_KEY, SECRET_KEY
from edgecli.host.status import RequestCounter, StatusServer
from edgecli.host.supervisor import Supervisor
from edgecli.host.websocket import WebSocketProtocol
from edgecli.host.worker import KILL_MARGIN
from edgecli.http_protocol import HttpProtocol
from edgecli.printer import EventPrinter
from edgecli.runtime.debugger import ENV_ADDRESS as ENV_INSPECT_ADDRESS
from edgecli.runtime.debugger import ENV_MODE as ENV_INSPECT_MODE
from edgecli.store.feed import StoreFeed

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


class UvicornLog(logging.Handler):
    """uvicorn's own log records (an invalid request, an ASGI error) as serve's events: in the terminal's
    lines, in the store, and under `--prod` as JSON records on stdout like every other, not plain text on
    stderr."""

    LEVELS: dict[int, Level] = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}

    def __init__(self, emit: Callable[[Event], None]) -> None:
        super().__init__()
        self.emit_event = emit

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        level = self.LEVELS.get(record.levelno, "error")
        self.emit_event(events.log(message, level, logger=record.name))

    @classmethod
    def install(cls, emit: Callable[[Event], None]) -> None:
        logger = logging.getLogger("uvicorn")
        logger.handlers = [cls(emit)]
        logger.propagate = False


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
        self.store = (
            StoreFeed(config.events_db, config.event_retention, config.event_retention_mb)
            if config.store
            else None
        )
        self.printer = EventPrinter(output, json_output=config.json_output, functions=list(config.functions))
        self.registry = Registry(config, host_env(os.environ), self.extra_env(config))
        self.health = Health(self.registry.pools) if config.prod else None
        self.requests = RequestCounter()
        sinks = (self.printer, self.store, self.health, self.requests)
        self.hub = Hub([sink for sink in sinks if sink is not None])
        self.status = StatusServer(config.state_dir, config.base_url, self.status_snapshot)
        self.supervisor = Supervisor(self.hub.emit, self.registry.worker_spec, config.state_dir / "deps")
        self.lending = config.inspect is None  # a debugged worker serves through serve only
        if self.lending and config.policy == "per_worker":
            self.supervisor.preload = (LENT_MODULE,)
        self.stop_requested_at: float | None = None
        self.server: _Uvicorn | None = None
        self.stopping = False
        self.hurry = False  # Ctrl-C came twice
        self._warming: asyncio.Future[Any] | None = None
        self.reloader: Reloader | None = None
        self._drain: asyncio.Future[None] | None = None

    @staticmethod
    def extra_env(config: Config) -> dict[str, str]:
        """What every worker gets on top of its function's own environment. Under --prod the container's
        platform owns SUPABASE_URL and the keys (a self-hosted Supabase's compose file sets them for its
        functions container): when it sets them, functions see those. With --inspect, the worker listens
        for a debugger (runtime/debugger.py)."""
        env = {k: os.environ[k] for k in injected_env(config) if k in os.environ} if config.prod else {}
        if config.inspect is not None:
            env[ENV_INSPECT_ADDRESS] = config.inspect
            env[ENV_INSPECT_MODE] = config.inspect_mode
        return env

    def status_snapshot(self) -> dict[str, Any]:
        """Workers, their state and requests served, per function (`edgecli functions list`)."""
        functions: dict[str, Any] = {}
        for name, pool in self.registry.pools.items():
            workers = [w for w in self.supervisor.workers.values() if w.function.name == name and w.live]
            functions[name] = {
                "verify_jwt": self.config.verify_jwt and pool.function.verify_jwt,  # --no-verify-jwt too
                "requests": self.requests.by_function[name],
                "boot_error": pool.broken.message if pool.broken is not None else None,
                "workers": [
                    {
                        "id": w.id,
                        "pid": w.pid,
                        "state": w.state.value,
                        "inflight": len(w.inflight),
                        "tasks": len(w.tasks),
                        "requests": self.requests.by_worker[w.id],
                    }
                    for w in workers
                ],
            }
        return {"policy": self.registry.config.policy, "functions": functions}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig)
        # Where serve listens, for `invoke` and `logs -f` in other shells; the socket already listens.
        here = listening.Listening(
            listening.client_url(self.config.host, self.sock.getsockname()[1]),
            os.getpid(),
            tuple(self.config.functions),
        )
        kept = listening.Kept(self.config.state_dir, here, lambda: tuple(self.registry.config.functions))
        self.hub.sinks.append(kept)
        try:
            await self.startup()
            if not self.stopping:
                assert self.server is not None
                await self.server.serve(sockets=[self.sock])
        finally:
            kept.forget()
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        config = self.config
        await self.supervisor.start()
        self.registry.open(self.supervisor)
        health = (HEALTH_PATH, self.health.answer) if self.health is not None else None
        verifier = Verifier(config.jwt_secret, config.signing_keys)
        pools = self.registry.pools
        relay = Relay(
            pools, verifier, self.hub.emit, verify_jwt=config.verify_jwt, health=health, lending=self.lending
        )
        lender = Lender(lambda: self.new_protocol(), self.hub.emit)
        if config.prod:
            self.announce()
        else:
            self.banner()
            await self.status.start()  # for `edgecli functions list`; a container has no use for it
        uv_config = uvicorn.Config(
            relay,
            http=LendingProtocol.with_lender(lender, config.head_timeout_sec),
            ws=WebSocketProtocol,
            lifespan="off",
            log_config=None,  # its records are events (UvicornLog), not lines of its own on stderr
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            # `server` and `date` as bare uvicorn sends them: the function sees what uvicorn would give.
            server_header=True,
            date_header=True,
            # Longer than any worker's drain: the relay answers the requests a drain cuts.
            timeout_graceful_shutdown=int(longest_grace(config) + KILL_MARGIN + 1),
        )
        UvicornLog.install(self.hub.emit)
        self.server = _Uvicorn(uv_config, self.begin_drain)
        self.supervisor.lender = lender
        if config.reload:  # watching starts before warming: an edit made meanwhile is not missed
            self.reloader = Reloader(self.registry, self.overrides, self.hub.emit)
            self.reloader.start()
        # Boot one worker per function now (--prod, per_worker: max_parallelism of them, so that no early
        # request is a cold one): the first request is fast and boot errors show at once. A module that
        # hangs at import must not hold up serving: give up waiting after WARM_WAIT. Under --prod serving
        # starts at once, and the health probe says when the workers are up.
        warm_all = config.prod and config.policy == "per_worker"
        workers = {name: f.limits.parallelism if warm_all else 1 for name, f in config.functions.items()}
        warming = (pool.warm(workers[name]) for name, pool in pools.items())
        self._warming = asyncio.ensure_future(asyncio.gather(*warming))
        self._warming.add_done_callback(_retrieved)
        await asyncio.wait([self._warming], timeout=0 if config.prod else WARM_WAIT)

    def banner(self) -> None:
        config = self.config
        self.printer.flush()  # events of the start-up so far print above the banner, as they happened
        notes: list[str] = list(config.warnings) + list(config.skipped)
        if config.inspect is not None:
            waits = {"run": "", "wait": "; it waits for you", "brk": "; it waits and stops before it runs"}
            notes.append(
                f"debugger: attach to {config.inspect} (debugpy; limits off for "
                f"{', '.join(config.functions)}{waits.get(config.inspect_mode, '')})"
            )
        for function in config.functions.values():
            notes.extend(build_function_env(config, function).warnings)
        print_banner(
            self._person_output(),
            project=config.project_id or config.project_dir.name or str(config.project_dir),
            policy=config.policy,
            functions=[(name, f"{config.base_url}/functions/v1/{name}") for name in config.functions],
            anon_key=make_key(config.jwt_secret, "anon"),
            service_role_key=make_key(config.jwt_secret, "service_role"),
            publishable_key=PUBLISHABLE_KEY,
            secret_key=SECRET_KEY,
            notes=list(dict.fromkeys(notes)),
            verify_jwt=config.verify_jwt,
            reload=config.reload,
        )

    def _person_output(self) -> Output:
        """Where lines for a person go: with --json, stdout carries only event records (for piping), so
        the banner and notices go to stderr."""
        if self.config.json_output:
            return Output(out=self.output.err, err=self.output.err)
        return self.output

    def announce(self) -> None:
        """--prod's start-up: the config's warnings and where it listens, as records on stdout. No keys:
        a container's log is read by more people than a developer's terminal."""
        config = self.config
        notes: list[str] = list(config.warnings) + list(config.skipped)
        for function in config.functions.values():
            notes.extend(build_function_env(config, function).warnings)
        for note in dict.fromkeys(notes):
            self.hub.emit(events.log(note, "warning"))
        names = ", ".join(config.functions) or "no functions"
        message = f"serving {names} on {config.base_url} (prod, policy {config.policy})"
        self.hub.emit(events.log(message))

    def request_stop(self, sig: int) -> None:
        if self.stopping and sig == signal.SIGINT:
            # A second Ctrl-C: wait for nothing, neither open connections nor background tasks.
            self.hurry = True
            if self.server is not None:
                self.server.force_exit = True
            self.supervisor.stop_now()
        self.stopping = True
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        if self._warming is not None:
            self._warming.cancel()
        if self.server is not None:
            self.server.should_exit = True

    def drain_cap(self) -> float | None:
        """At most how long requests and tasks may still run (None: each its function's own timeout).
        Under --prod the platform kills the container a grace period after its SIGTERM, so requests and
        tasks share one graceful_exit_timeout_sec counted from the signal."""
        if self.hurry:
            return 0.0
        if not self.config.prod or self.stop_requested_at is None:
            return None
        grace = self.config.limits.graceful_exit_timeout_sec
        return max(0.0, grace - (time.monotonic() - self.stop_requested_at))

    def new_protocol(self) -> HttpProtocol:
        """serve's HTTP protocol for a connection a worker gives back (edgecli/host/lending.py)."""
        assert self.server is not None
        config = self.server.config
        protocol: HttpProtocol = config.http_protocol_class(  # type: ignore[call-arg, assignment]
            config=config, server_state=self.server.server_state, app_state={}
        )
        return protocol

    def begin_drain(self) -> None:
        if self.supervisor.lender is not None:
            self.supervisor.lender.stop_lending()
        if self._drain is None:
            self._drain = asyncio.ensure_future(self.drain())

    async def drain(self) -> None:
        """No more reloads and no new workers; every worker drains (see Supervisor.shutdown)."""
        if self.reloader is not None:
            await self.reloader.stop()
        self.registry.close()
        cap = self.drain_cap()
        grace = longest_grace(self.registry.config) if cap is None else cap
        tasks = self.supervisor.running_tasks()
        if tasks and grace > 0 and not self.config.prod:
            self.printer.flush()
            print_draining(self._person_output(), tasks, grace)
        await self.supervisor.shutdown(cap)
        if self.supervisor.lender is not None:
            self.supervisor.lender.close_all()
        await self.status.close()

    async def shutdown(self) -> None:
        self.begin_drain()
        assert self._drain is not None
        await self._drain
        self.sock.close()
        if self.store is not None:
            self.store.close()
        self.printer.flush()


def serve(config: Config, output: Output, overrides: Overrides | None = None, workers: int = 1) -> int:
    """Serve until a signal; `workers` > 1 (--prod): that many serve processes on one socket."""
    sock = replicas.inherited_socket()
    if sock is None:
        sock = bind(config.host, config.port)
        if workers > 1:
            return replicas.Replicas(sock, workers, sys.argv[1:]).run()
    if config.port == 0:
        # `--port 0`: the port the system picked is the one to show and inject, and the one a reload of
        # config.toml keeps (else it would read 0 again and say that the port changed).
        port = int(sock.getsockname()[1])
        config = replace(config, port=port)
        overrides = replace(overrides or Overrides(), port=port)
    return run(ServeCommand(config, output, sock, overrides).run())


def run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on Linux/macOS
        return asyncio.run(coro)
    return int(uvloop.run(coro))
