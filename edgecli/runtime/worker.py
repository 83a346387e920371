"""The worker: one process per function instance, forked from the fork server.

It boots the user module, then serves requests the host multiplexes over one socket (ipc.py), tracks
background tasks, reports events, and leaves when the host says so (STOP) or the host goes away (EOF).

Lifecycle: boot → READY | BOOT_ERROR → serve … → STOP(grace, reason) → drain → beforeunload → BYE → exit.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgecli import events, ipc
from edgecli.events import Event
from edgecli.ipc import Kind
from edgecli.runtime import background, capture, debugger, report
from edgecli.runtime.api import BeforeUnloadEvent, UnhandledRejectionEvent, listeners
from edgecli.runtime.channels import Channel, http_io
from edgecli.runtime.loader import ASGIApp, BootFailure, Lifespan, import_entrypoint, resolve_app
from edgecli.runtime.tasks import format_exception, tracker
from edgecli.runtime.tracebacks import UserMistake, boot_failure
from edgecli.runtime.websocket import ClientDisconnected, SocketIO

if TYPE_CHECKING:
    from edgecli.runtime.lent import Lending

T = TypeVar("T")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@dataclass
class WorkerSpec:
    """What the host tells the fork server about a worker to create (JSON over the control socket)."""

    worker: str
    function: str
    entrypoint: str
    directory: str
    functions_dir: str
    env: dict[str, str] = field(default_factory=dict)
    lifespan: bool = True
    argv: list[str] = field(default_factory=list)  # a Deno worker: the command the child execs
    deps: str = ""  # the function's installed dependencies (host/deps.py), first on sys.path


def rss_mb() -> float:
    with open("/proc/self/statm", "rb") as f:
        return round(int(f.read().split()[1]) * PAGE_MB, 1)


def cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * 1000, 1)


def _fault(message: str) -> None:
    report.reporter.log(message, "error")  # the reporter is set once the protocol exists: looked up now


class Worker:
    def __init__(self, spec: WorkerSpec, sock: socket.socket, lend_sock: socket.socket | None = None) -> None:
        self.spec = spec
        self.sock = sock
        self.lend_sock = lend_sock  # where serve lends client connections (edgecli/runtime/lent.py)
        self.lending: Lending | None = None
        self.recalled = False  # serve wants its lent connections back (it may say so before lending one)
        self.proto: ipc.FrameProtocol | None = None
        self.app: ASGIApp | None = None
        self.lifespan: Lifespan | None = None
        self.channels: dict[int, Channel] = {}
        self.unloaded = False  # beforeunload fired (it fires once)
        self.stopping = False
        self.done: asyncio.Future[None] | None = None
        self.writers: tuple[capture.LineWriter, ...] = ()
        self._housekeeping: set[asyncio.Task[Any]] = set()

    # -- startup ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        _, proto = await loop.connect_accepted_socket(
            lambda: ipc.FrameProtocol(self.on_frame, self.on_lost, coalesce=True, on_fault=_fault), self.sock
        )
        self.proto = proto
        report.reporter = report.Reporter(self.spec.function, self.spec.worker, self.send_event)
        tracker.prefix = f"{self.spec.worker}.t"
        tracker.loop = loop
        tracker.on_failure = self.on_task_failure
        self.writers = capture.install(loop, capture.Outlet(proto, loop))
        if self.lend_sock is not None:
            loop.add_reader(self.lend_sock.fileno(), self.first_lend)
        if await self.boot():
            await self.done
        await self.leave()

    async def boot(self) -> bool:
        started = time.perf_counter()
        entry = Path(self.spec.entrypoint)
        try:
            debugger.start()  # --inspect: before the module runs, so its first lines can be debugged
            background.install()
            module = import_entrypoint(entry)
            self.app, is_asgi = resolve_app(module, entry)
            if self.spec.lifespan and is_asgi:
                self.lifespan = Lifespan(self.app)
                await self.lifespan.startup()
        except BaseException as exc:  # SystemExit / KeyboardInterrupt at import are boot errors too
            message, error = (str(exc), str(exc)) if isinstance(exc, BootFailure) else boot_failure(exc)
            capture.flush_all(*self.writers)
            self.write(ipc.pack_json(Kind.BOOT_ERROR, 0, {"message": message, "error": error}))
            return False
        boot_ms = round((time.perf_counter() - started) * 1000, 2)
        self.write(ipc.pack_json(Kind.READY, 0, {"boot_ms": boot_ms, "pid": os.getpid(), "cpu_ms": cpu_ms()}))
        return True

    # -- wire ------------------------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        if self.proto is not None:
            self.proto.write(frame)

    def write_last(self, frame: bytes) -> None:
        """A response's last frame. Frames wait for the end of the loop's pass so that the responses of
        concurrent requests leave in one write; a request alone in flight has nothing to share it with,
        and must not be held back by a background task that blocks the loop right after it."""
        if self.proto is not None:
            # Lines printed so far go first (a print's record leaves as it returns; a traceback may be
            # held): once a response is complete, its handler's log lines are recorded.
            for writer in self.writers:
                if writer.holding:
                    writer.send_held()
            self.proto.write(frame)
            if len(self.channels) == 1:
                self.proto.flush()

    async def drain(self) -> None:
        if self.proto is not None:
            await self.proto.drain()

    def flush(self) -> None:
        """Send the frames held for this pass now."""
        if self.proto is not None:
            self.proto.flush()

    def send_event(self, event: Event) -> None:
        self.write(ipc.pack(Kind.EVENT, 0, event.to_row_json()))

    def on_lost(self, exc: Exception | None) -> None:
        # The host is gone (or closed us): nobody is left to report to. Leave at once.
        os._exit(0)

    def on_frame(self, kind: int, flags: int, channel: int, payload: bytes) -> None:
        if kind == Kind.BODY or kind == Kind.WS_RECEIVE:
            chan = self.channels.get(channel)
            if chan is not None:
                chan.inbox.put((payload, flags))
        elif kind == Kind.REQUEST:
            self.open_channel(channel, payload)
        elif kind == Kind.CREDIT:
            chan = self.channels.get(channel)
            if chan is not None:
                chan.credit.consumed(ipc.unpack_count(payload))
        elif kind == Kind.DISCONNECT:
            chan = self.channels.get(channel)
            if chan is not None and not chan.disconnected:
                if payload:
                    chan.close_code = ipc.unpack_count(payload)
                chan.disconnect()
        elif kind == Kind.RECALL:
            self.recall(closing=payload == ipc.RECALL_CLOSING)
        elif kind == Kind.NOTICE:
            self.background(self.fire_beforeunload(ipc.loads(payload)["reason"]))
        elif kind == Kind.STOP:
            msg = ipc.loads(payload)
            self.background(self.stop(float(msg["grace"]), msg["reason"]))

    def first_lend(self) -> None:
        """Serve lends a first connection: only now is uvicorn's protocol imported (edgecli/runtime/lent.py),
        which a worker of another policy never needs."""
        assert self.lend_sock is not None
        asyncio.get_running_loop().remove_reader(self.lend_sock.fileno())
        from edgecli.runtime.lent import Lending

        self.lending = Lending(self, self.lend_sock)
        if self.recalled:
            self.lending.recall()
        self.lending.start()

    def recall(self, closing: bool = False) -> None:
        self.recalled = True
        if self.lending is not None:
            self.lending.recall(closing)

    # -- requests --------------------------------------------------------------------------------------

    def open_channel(self, channel: int, payload: bytes) -> None:
        scope, request_id = ipc.decode_scope(payload)
        if self.lifespan is not None:
            scope["state"] = dict(self.lifespan.state)
        chan = Channel()
        self.channels[channel] = chan
        token = report.current_request.set(request_id)
        try:  # the handler task copies the context: its prints and tasks carry the request id
            chan.task = asyncio.get_running_loop().create_task(self.handle(channel, chan, scope))
        finally:
            report.current_request.reset(token)

    async def handle(self, channel: int, chan: Channel, scope: dict[str, Any]) -> None:
        assert self.app is not None
        assert self.proto is not None
        ws = SocketIO(self.proto, channel, chan, self.write_last) if scope["type"] == "websocket" else None
        receive, send = (ws.receive, ws.send) if ws else http_io(self, channel, chan, scope)
        try:
            await self.app(scope, receive, send)
            if ws:
                ws.end(1000)
            elif not chan.started:
                report.reporter.log("The app finished without sending a response", "error")
                self.fail(channel, "the app finished without sending a response")
            elif chan.pending_start is not None:
                self.write_last(chan.pending_start + ipc.pack(Kind.RESPONSE, channel))
        except asyncio.CancelledError:
            # Told to stop with the socket still open: only serve's own shutdown does that (a retiring
            # worker is told once its sockets have closed), so the code is the one serve's deadline uses.
            if ws:
                ws.end(1012)
            else:
                self.fail(channel, "the worker stopped before the response was complete")
        except UserMistake as exc:  # its message says what to change; a traceback would only blur it
            report.reporter.log(str(exc), "error")
            self.fail(channel, str(exc))
        except Exception as exc:
            if not (ws and isinstance(exc, ClientDisconnected)):
                report.reporter.log(f"Uncaught exception in handler:\n{format_exception(exc)}", "error")
            if ws:
                ws.end(1011)
            else:
                self.fail(channel, f"{type(exc).__name__}: {exc}")
        finally:
            del self.channels[channel]

    def fail(self, channel: int, message: str) -> None:
        self.write_last(ipc.pack_json(Kind.FAILED, channel, {"message": message}))

    # -- background tasks and lifecycle ----------------------------------------------------------------

    def background(self, coro: Any) -> None:
        """Run our own housekeeping coroutine, keeping a reference so it is not garbage-collected."""
        task = asyncio.ensure_future(coro)
        self._housekeeping.add(task)
        task.add_done_callback(self._housekeeping.discard)

    async def on_task_failure(self, exc: BaseException, task: asyncio.Task[Any]) -> bool:
        """A background task raised: its `unhandledrejection` listeners run (tagged with the task); unless
        one calls prevent_default(), the worker asks to be retired. True when handled."""
        event = UnhandledRejectionEvent(exc, task)
        await listeners.dispatch("unhandledrejection", event, self.listener_failed)
        if event.default_prevented:
            return True
        name = getattr(task.get_coro(), "__qualname__", "task")
        report.reporter.log(
            f"Unhandled exception in background task {name}:\n{format_exception(exc)}", "error"
        )
        self.write(ipc.pack_json(Kind.RETIRE, 0, {"reason": "unhandledrejection"}))
        return False

    def listener_failed(self, exc: BaseException) -> None:
        report.reporter.log(f"An event listener raised:\n{format_exception(exc)}", "error")

    async def fire_beforeunload(self, reason: str) -> None:
        if self.unloaded:
            return
        self.unloaded = True
        report.reporter.send(events.beforeunload(reason, **report.reporter.context()))
        await listeners.dispatch("beforeunload", BeforeUnloadEvent(reason), self.listener_failed)

    async def stop(self, grace: float, reason: str) -> None:
        """Drain requests and tasks for up to `grace` s; leave with `reason` if all settled, else cut off."""
        if self.stopping:
            return
        self.stopping = True
        self.recall()
        settled = await self.wait_settled(grace) if grace > 0 else not (self.in_flight() or tracker.pending)
        if not settled:
            await self.disconnect_sockets()
        await self.fire_beforeunload(reason if settled else "termination")
        if tracker.pending:
            await tracker.cancel_all("termination" if reason == "early_drop" else reason)
        for task in self.in_flight():
            task.cancel()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def disconnect_sockets(self) -> None:
        """The WebSockets still open when the grace ran out: the app hears the code serve closes them
        with at the same deadline (1012, serve stopping: only then is a worker with open sockets told to
        stop), as under uvicorn, before its handler is cancelled."""
        sockets = [chan for chan in self.channels.values() if chan.accepted and not chan.disconnected]
        for chan in sockets:
            chan.close_code = 1012
            chan.disconnect()
        if sockets:
            await asyncio.sleep(0)  # one pass: a handler waiting in receive() gets the disconnect

    def in_flight(self) -> list[asyncio.Task[Any]]:
        """The requests being handled: on channels, and on lent connections."""
        tasks = [c.task for c in self.channels.values() if c.task is not None]
        return tasks + self.lending.busy() if self.lending is not None else tasks

    async def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (requests := self.in_flight()) or tracker.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            waiting = requests + list(tracker.pending)
            await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        return True

    async def leave(self) -> None:
        if self.lifespan is not None:
            await self.lifespan.shutdown()
        await asyncio.sleep(0)  # let cancelled handlers report their FAILED frames
        if self.lending is not None:
            await self.lending.flushed()
        capture.flush_all(*self.writers)
        self.write(ipc.pack_json(Kind.BYE, 0, {"cpu_ms": cpu_ms(), "memory_mb": rss_mb()}))
        if self.proto is not None:
            # close() flushes what is buffered, then connection_lost exits the process.
            self.proto.close()
            await asyncio.sleep(2)


def child_main(spec: WorkerSpec, sock_fd: int, out_fd: int, err_fd: int, lend_fd: int) -> None:
    """Entry point in the freshly forked child. Never returns."""
    code = 0
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        replace_environ(spec.env)
        os.chdir(spec.directory)
        # The function's own dependencies first, then its folder, then functions/ so that
        # `from _shared import x` works.
        sys.path[:0] = [*([spec.deps] if spec.deps else []), spec.directory, spec.functions_dir]
        sock = socket.socket(fileno=sock_fd)
        sock.setblocking(False)
        lend_sock = socket.socket(fileno=lend_fd)
        lend_sock.setblocking(False)
        run_loop(Worker(spec, sock, lend_sock).run())
    except BaseException:
        code = 70
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def replace_environ(env: dict[str, str]) -> None:
    """Make os.environ exactly `env` (the host built it whole: see docs/architecture.md)."""
    os.environ.clear()
    os.environ.update(env)


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (it ships with uvicorn[standard] on Linux and macOS)
        return asyncio.run(coro)
    return uvloop.run(coro)
