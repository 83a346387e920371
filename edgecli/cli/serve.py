"""`serve`: the project's functions with hot reload until Ctrl-C, or as in a container (`--prod`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecli.cli.app import JsonOpt, WorkdirOpt, app, option, output, until_ctrl_c, workdir_of
from edgecli.errors import UsageError

DEFAULT_INSPECT = "127.0.0.1:5678"  # debugpy's usual port, what editors' attach configurations expect


@app.command()
def serve(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Serve only these functions (default: all of them).", show_default=False),
    ] = None,
    policy: Annotated[
        str | None,
        option("--policy", help="per_worker | oneshot | per_request (default: [edge_runtime] policy)."),
    ] = None,
    port: Annotated[
        int | None, option("--port", help="Port (default: [api] port or 54321; 0: any free port).")
    ] = None,
    host: Annotated[str | None, option("--host", help="Interface (default 127.0.0.1).")] = None,
    env_file: Annotated[Path | None, option("--env-file", help="Env file for every function.")] = None,
    no_verify_jwt: Annotated[bool, option("--no-verify-jwt", help="Skip JWT checks.")] = False,
    no_reload: Annotated[bool, option("--no-reload", help="Do not watch files.")] = False,
    inspect: Annotated[
        str | None,
        option(
            "--inspect",
            metavar="[=HOST:PORT]",
            help=f"Debug the one function named with debugpy (VS Code, PyCharm attach; limits off). "
            f"[default: {DEFAULT_INSPECT}]",
        ),
    ] = None,
    inspect_mode: Annotated[
        str,
        option("--inspect-mode", help="run | brk (stop before the module runs) | wait (for the debugger)."),
    ] = "run",
    json_output: JsonOpt = False,
    prod: Annotated[
        bool,
        option(
            "--prod",
            help="Serve as in a container: 0.0.0.0 and $PORT, JSON lines, /_internal/health, no reload.",
        ),
    ] = False,
    store: Annotated[
        bool | None,
        option(
            "--store/--no-store",
            help="Record events for `edgecli logs` (default: on; --prod: off).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        option("--workers", min=1, help="--prod: serve processes sharing the port (default 1)."),
    ] = 1,
    workdir: WorkdirOpt = None,
) -> None:
    """Serve the project's functions with hot reload until Ctrl-C."""
    from edgecli import project
    from edgecli.config import Overrides, load_config

    overrides = Overrides(
        policy=policy or ("per_worker" if inspect is not None else None),
        port=port,
        host=host,
        env_file=env_file,
        no_verify_jwt=no_verify_jwt,
        reload=False if no_reload else None,
        json_output=json_output,
        only=tuple(names or ()),
        inspect=_inspect_address(inspect, inspect_mode, names, policy),
        inspect_mode=inspect_mode,
        prod=prod,
        store=store,
    )

    def go() -> int:
        if workers > 1 and not prod:
            raise UsageError(
                f"--workers {workers} runs several serve processes on one port, which only --prod does "
                "(in development one serve reloads and records events for all): add --prod, or drop "
                "--workers."
            )
        config = load_config(project.find_project(workdir_of(ctx, workdir)), overrides)
        # Imported after the config is loaded: bad config is reported before any server code is loaded.
        from edgecli.host.server import serve as run_server

        return run_server(config, output(), overrides, workers)

    raise typer.Exit(until_ctrl_c(go))


def _inspect_address(
    address: str | None, mode: str, names: list[str] | None, policy: str | None
) -> str | None:
    """--inspect's HOST:PORT, checked; None without --inspect."""
    if address is None:
        return None
    if mode not in ("run", "brk", "wait"):
        _usage(f"--inspect-mode {mode!r} is not a mode. Use run, brk or wait.")
    if len(names or ()) != 1:
        _usage("--inspect debugs one function: name it, e.g. `edgecli serve --inspect hello`.")
    if policy not in (None, "per_worker"):
        _usage("--inspect serves the function with one per_worker worker to attach to; leave out --policy.")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _usage(f"--inspect={address} is not HOST:PORT; e.g. --inspect={DEFAULT_INSPECT}.")
    return address


def _usage(message: str) -> None:
    output().error(message)
    raise typer.Exit(2)


def bare_inspect(args: list[str]) -> list[str]:
    """`--inspect` alone means the default address: its value is given only as `--inspect=HOST:PORT`, so
    that `serve --inspect hello` reads `hello` as the function."""
    return [f"--inspect={DEFAULT_INSPECT}" if arg == "--inspect" else arg for arg in args]
