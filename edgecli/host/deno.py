"""TypeScript and JavaScript functions: how the host starts a Deno worker for them.

A Deno worker is forked by the fork server like a Python one (same socket, pipes, parent-death signal and
supervision), and then replaces itself with `deno run` of the worker shipped in edgecli/runtime/deno/,
which speaks the same wire protocol. docs/architecture.md describes the exchange.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecli.config import FunctionConfig
from edgecli.deno import INSTALL_HINT, deno_binary

WORKER_TS = Path(__file__).resolve().parent.parent / "runtime" / "deno" / "worker.ts"


def worker_argv(function: FunctionConfig, worker_id: str) -> list[str]:
    """The command a Deno worker execs: `deno run` of our worker, told which module to serve."""
    binary = deno_binary()
    if binary is None:  # config only lists a TypeScript function as servable when Deno is there
        raise RuntimeError(f"{function.name} needs Deno: {INSTALL_HINT}")
    argv = [binary, "run", "--allow-all", "--quiet", "--no-prompt"]
    for name in ("deno.json", "deno.jsonc"):
        # Deno looks for its config beside the main module, which is our worker: point it at the function's.
        if (function.directory / name).is_file():
            argv += ["--config", str(function.directory / name)]
            break
    spec = {"worker": worker_id, "function": function.name, "entrypoint": str(function.entrypoint)}
    return [*argv, str(WORKER_TS), json.dumps(spec)]
