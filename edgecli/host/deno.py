"""TypeScript and JavaScript functions: how the host starts a Deno worker for them.

A Deno worker is forked by the fork server like a Python one (same socket, pipes, parent-death signal and
supervision), and then replaces itself with `deno run` of the worker shipped in edgecli/runtime/deno/,
which speaks the same wire protocol. Before the first worker of new code, serve type-checks the function
(`TypeChecks`). docs/architecture.md describes the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from edgecli.config import FunctionConfig
from edgecli.deno import INSTALL_HINT, deno_binary

DENO_DIR = Path(__file__).resolve().parent.parent / "runtime" / "deno"
WORKER_TS = DENO_DIR / "worker.ts"
# The globals the worker gives a function (EdgeRuntime), declared for the type check.
DECLARATIONS = DENO_DIR / "edge-runtime.d.ts"
FETCH_HINT = (
    "; Deno has it neither in its cache (DENO_DIR) nor from the registry: check the name and version, "
    "or run `deno cache` on the function where the registry is reachable"
)


def worker_argv(function: FunctionConfig, worker_id: str, lock: Path | None = None) -> list[str]:
    """The command a Deno worker execs: `deno run` of our worker, told which module to serve (`lock`:
    the lock file its type check used, `TypeChecks.lock_for`)."""
    argv = [_binary(function), "run", "--allow-all", "--quiet", "--no-prompt", *project_flags(function, lock)]
    spec = {"worker": worker_id, "function": function.name, "entrypoint": str(function.entrypoint)}
    return [*argv, str(WORKER_TS), json.dumps(spec)]


def project_flags(function: FunctionConfig, lock: Path | None) -> list[str]:
    """What `deno run` and `deno check` are told of the function's own project files."""
    config = function_config(function)
    flags = ["--config", config] if config is not None else []
    if lock is not None:
        flags += ["--lock", str(lock)]
    if _packages_from_cache(function, config):
        flags.append("--node-modules-dir=none")
    return flags


def _packages_from_cache(function: FunctionConfig, config: str | None) -> bool:
    """A package.json beside the entrypoint makes `deno check` expect a node_modules folder that `deno
    install` filled, and refuse every npm package without one, `npm:` imports included. With none
    there, packages come from Deno's cache (and the registry), as without a package.json; a node_modules
    the user installed, or a deno.json that says `nodeModulesDir`, is left to Deno. (The worker's own
    run never sees that package.json: its main module is ours. The flag keeps the two alike.)"""
    if not (function.directory / "package.json").is_file() or (function.directory / "node_modules").is_dir():
        return False
    return config is None or '"nodeModulesDir"' not in Path(config).read_text(errors="replace")


def function_config(function: FunctionConfig) -> str | None:
    """The function's own deno.json(c): Deno looks for its config beside the main module, which is our
    worker, so the worker (and the type check) must be pointed at the function's."""
    for name in ("deno.json", "deno.jsonc"):
        if (function.directory / name).is_file():
            return str(function.directory / name)
    return None


def _binary(function: FunctionConfig) -> str:
    binary = deno_binary()
    if binary is None:  # config only lists a TypeScript function as servable when Deno is there
        raise RuntimeError(f"{function.name} needs Deno: {INSTALL_HINT}")
    return binary


class TypeCheckError(Exception):
    """`deno check` refused the function: `message` is one line of Deno's report, `error` all of it."""

    def __init__(self, message: str, error: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.transient = transient  # it did not finish: the same code is checked again next time


class TypeChecks:
    """`deno check` of a function, once per generation of its code.

    `deno run` does not type-check a module it imports dynamically, which is how the worker imports the
    function, so serve checks it before forking the first worker of new code. The check also fetches
    the function's npm: and jsr: imports into Deno's cache, or fails to find one. It runs in serve, not
    in the worker: TypeScript takes more CPU and memory than a worker's limits allow, and later workers
    of the same code (oneshot's spares, more per_worker workers) need no check of their own.
    """

    def __init__(self) -> None:
        # function name -> (the code's key, its check); a new key starts a new check
        self._checks: dict[str, tuple[object, asyncio.Task[None]]] = {}
        self._locks: Path | None = None  # serve's own copies of the functions' deno.lock

    def lock_for(self, function: FunctionConfig) -> Path | None:
        """The lock file Deno reads and updates for `function`: serve's copy of the function's deno.lock.

        Deno writes deno.lock beside a function's deno.json (or package.json) as it resolves npm: and
        jsr: imports, and the watcher would take that write for a change of the function: one more
        reload, for nothing the user did. A copy keeps what the user's file pins (and its integrity
        checks) while the function's folder stays as the user left it, so that a change there is always
        the user's. None without a deno.json or a package.json: Deno keeps no lock file then.
        """
        if function_config(function) is None and not (function.directory / "package.json").is_file():
            return None
        if self._locks is None:
            self._locks = Path(tempfile.mkdtemp(prefix="edgecli-deno-locks-"))
        return self._locks / f"{function.name}.lock"

    async def ensure(
        self, function: FunctionConfig, key: object, env: Mapping[str, str], timeout: float
    ) -> float | None:
        """Return when `function` type-checks: how many ms the check took when this call started it,
        None when the same code had been checked already. Raise TypeCheckError when it does not."""
        known = self._checks.get(function.name)
        started = None
        if known is None or known[0] != key or _worth_again(known[1]):
            started = time.monotonic()
            task = asyncio.get_running_loop().create_task(
                _check(function, env, timeout, self._fresh_lock(function))
            )
            known = self._checks[function.name] = (key, task)
        await asyncio.shield(known[1])
        return None if started is None else (time.monotonic() - started) * 1000

    def _fresh_lock(self, function: FunctionConfig) -> Path | None:
        """`lock_for(function)`, now a copy of the function's deno.lock (none if it has none), for a
        new generation of its code: a user's edit of their deno.lock counts from the next check on."""
        lock = self.lock_for(function)
        if lock is not None:
            theirs = function.directory / "deno.lock"
            if theirs.is_file():
                shutil.copyfile(theirs, lock)
            else:
                lock.unlink(missing_ok=True)
        return lock

    def forget(self) -> None:
        for _, task in self._checks.values():
            task.cancel()
        self._checks.clear()
        if self._locks is not None:
            shutil.rmtree(self._locks, ignore_errors=True)
            self._locks = None


def _worth_again(task: asyncio.Task[None]) -> bool:
    if not task.done():
        return False
    if task.cancelled():
        return True
    error = task.exception()
    return not isinstance(error, TypeCheckError) or error.transient


async def _check(function: FunctionConfig, env: Mapping[str, str], timeout: float, lock: Path | None) -> None:
    argv = [_binary(function), "check", "--quiet", *project_flags(function, lock)]
    # The declarations go in as a root of their own: their globals are then the whole program's.
    argv += [str(DECLARATIONS), str(function.entrypoint)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=function.directory,
        env={**env, "NO_COLOR": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout or None)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        message = (
            f"{function.name} did not finish its type check (`deno check`) within {timeout:g} s "
            "(boot_timeout_sec): is a registry it imports from unreachable? Raise boot_timeout_sec in "
            "config.toml if the check only needs longer"
        )
        raise TypeCheckError(message, message, transient=True) from None
    if proc.returncode == 0:
        return
    report = re.sub(r"\n+Stack backtrace:[\s\S]*$", "", output.decode(errors="replace")).strip()
    if lock is not None and (function.directory / "deno.lock").is_file():
        report = report.replace(str(lock), str(function.directory / "deno.lock"))  # the file the user has
    raise TypeCheckError(summary(report), report)


def summary(report: str) -> str:
    """The first error of Deno's report, its causes and where it is, as one line."""
    lines = [line.strip() for line in report.splitlines()]
    first = next((i for i, line in enumerate(lines) if re.match(r"(TS\d+ |error: )", line)), None)
    if first is None:
        return f"deno check failed: {report.splitlines()[0] if report else 'no output'}"
    causes: list[str] = []
    where = ""
    caused_by = False
    for line in lines[first + 1 :]:
        if re.match(r"\d+: ", line) and not where:
            causes.append(line.split(": ", 1)[1])
        elif line == "Caused by:":
            caused_by = True
        elif caused_by and line and not line.startswith("at ") and not where:
            causes.append(line)  # a single cause, which Deno does not number
        elif line.startswith("at file://"):
            where = line.removeprefix("at file://")
            break
    head = lines[first].removeprefix("error: ")
    kind = "type error: " if re.match(r"TS\d+ ", head) else ""
    fetch = FETCH_HINT if re.search(r"Failed loading|failed to load|not found in cache", head) else ""
    return f"{kind}{': '.join([head, *causes])}{f' (at {where})' if where else ''}{fetch}"
