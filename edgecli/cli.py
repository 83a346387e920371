"""Typer commands. Thin on purpose: parse → Config → call a library function → exit status.

Everything a user can get wrong surfaces as an `EdgecliError` from the library; `_run` turns it into a
one-paragraph message on stderr and the error's exit status (1 failed operation, 2 bad usage/config).

Each command imports what it needs when it runs: `edgecli --version` and `--help` load no Rich console,
no HTTP client and no config parser (tests/test_startup.py checks the imports, bench/bench_startup.py the
time).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edgecli import __version__
from edgecli.errors import EdgecliError, UsageError

if TYPE_CHECKING:
    from edgecli.console import Output

app = typer.Typer(
    name="edgecli",
    help="Serve, invoke and inspect Python edge functions locally, like `supabase functions serve`.",
    no_args_is_help=True,
    # Click's plain help, not Rich's panels: it reads as well, and Rich's help costs `edgecli --help`
    # more start-up than the rest of the command (bench/bench_startup.py).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
    add_completion=False,
)
tasks_app = typer.Typer(help="Background tasks registered with EdgeRuntime.wait_until.")
app.add_typer(tasks_app, name="tasks")
functions_app = typer.Typer(help="The project's functions, and their workers while served.")
# Listed as `list` in the top-level help: a 9-letter name there would widen its column and cut others'
# summaries at 80 columns.
app.add_typer(functions_app, name="functions", hidden=True)

T = TypeVar("T")
WorkdirOpt = Annotated[
    Path | None,
    typer.Option("--workdir", help="Project directory (holds supabase/config.toml).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def _output() -> Output:
    from edgecli.console import Output

    return Output()


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except EdgecliError as exc:
        _output().error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def _until_ctrl_c(fn: Callable[[], int]) -> int:
    """Run a command that runs until Ctrl-C: Ctrl-C is how it ends, so it ends with status 0 wherever it
    lands (between loops, during a read, while closing), and a second one while exiting is ignored."""
    try:
        return _run(fn)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _workdir(ctx: typer.Context, workdir: Path | None) -> Path | None:
    """--workdir is accepted before or after the command name; the one after wins."""
    if workdir is not None:
        return workdir
    return (ctx.find_root().obj or {}).get("workdir")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgecli {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    workdir: WorkdirOpt = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = {"workdir": workdir}


@app.command(short_help="Write supabase/config.toml (with [edge_runtime]) and functions/.")
def init(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.toml.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Write supabase/config.toml (documented [edge_runtime]) and supabase/functions/."""
    from edgecli import project

    target = _workdir(ctx, workdir) or Path.cwd()
    _run(lambda: project.init_project(target, force=force, output=_output()))


@app.command(short_help="Scaffold a function from a template; adds [functions.NAME].")
def new(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Function name: ^[A-Za-z][A-Za-z0-9_-]*$")] = None,
    template: Annotated[str, typer.Option("--template", "-t", help="Template to start from.")] = "hello",
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates.")] = False,
    auth: Annotated[
        str | None, typer.Option("--auth", help="Who may call it: user | apikey | none (verify_jwt off).")
    ] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Scaffold supabase/functions/NAME/ from a template and add [functions.NAME] to config.toml."""
    from edgecli import project

    out = _output()
    if list_templates:
        _run(lambda: project.print_templates(out))
        return
    _run(lambda: project.new_function(_workdir(ctx, workdir), name, template=template, output=out, auth=auth))


@app.command()
def serve(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Serve only these functions (default: all of them).", show_default=False),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="per_worker | oneshot | per_request (default: [edge_runtime] policy)."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: [api] port or 54321).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface (default 127.0.0.1).")] = None,
    env_file: Annotated[Path | None, typer.Option("--env-file", help="Env file for every function.")] = None,
    no_verify_jwt: Annotated[bool, typer.Option("--no-verify-jwt", help="Skip JWT checks.")] = False,
    no_reload: Annotated[bool, typer.Option("--no-reload", help="Do not watch files.")] = False,
    inspect: Annotated[
        str | None,
        typer.Option(
            "--inspect",
            metavar="[=HOST:PORT]",
            help=f"Debug the one function named with debugpy (VS Code, PyCharm attach; limits off). "
            f"[default: {DEFAULT_INSPECT}]",
        ),
    ] = None,
    inspect_mode: Annotated[
        str,
        typer.Option(
            "--inspect-mode", help="run | brk (stop before the module runs) | wait (for the debugger)."
        ),
    ] = "run",
    json_output: JsonOpt = False,
    prod: Annotated[
        bool,
        typer.Option(
            "--prod",
            help="Serve as in a container: 0.0.0.0 and $PORT, JSON lines, /_internal/health, no reload.",
        ),
    ] = False,
    store: Annotated[
        bool | None,
        typer.Option(
            "--store/--no-store",
            help="Record events for `edgecli logs` (default: on; --prod: off).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="--prod: serve processes sharing the port (default 1)."),
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
        config = load_config(project.find_project(_workdir(ctx, workdir)), overrides)
        # Imported after the config is loaded: bad config is reported before any server code is loaded.
        from edgecli.host.server import serve as run_server

        return run_server(config, _output(), overrides, workers)

    raise typer.Exit(_until_ctrl_c(go))


@app.command(short_help="Write a Dockerfile for `serve --prod`; run docker build.")
def build(
    ctx: typer.Context,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Image tag (default: <project>:latest).")
    ] = None,
    python: Annotated[str, typer.Option("--python", help="Python version of the base image.")] = "3.12",
    force: Annotated[
        bool, typer.Option("--force", help="Replace a Dockerfile edgecli did not write.")
    ] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Write a Dockerfile (entrypoint `edgecli serve --prod`) and .dockerignore; run docker build if there."""
    import os

    from edgecli.deploy import build as deploy

    def go() -> int:
        return deploy.build(
            _workdir(ctx, workdir), _output(), os.environ, tag=tag, python=python, force=force
        )

    raise typer.Exit(_run(go))


@app.command(short_help="Print Knative, Kubernetes or compose manifests.")
def export(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="knative | kubernetes | compose")],
    image: Annotated[str | None, typer.Option("--image", help="Image (default: <project>:latest).")] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Print manifests for an engine: a Knative Service, a Kubernetes Deployment + Service, or compose."""
    import os

    from edgecli.deploy import build as deploy

    raise typer.Exit(
        _run(lambda: deploy.export(_workdir(ctx, workdir), target, _output(), os.environ, image))
    )


@app.command()
def invoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Function to call.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Body: JSON text, @file, or - for stdin.")
    ] = None,
    method: Annotated[
        str | None, typer.Option("-X", "--request", help="HTTP method (default: POST).")
    ] = None,
    headers: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="A request header, 'Key: Value'; repeatable.")
    ] = None,
    path: Annotated[str, typer.Option("--path", help="Sub-path inside the function.")] = "",
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Server base URL.  [default: the running serve's, else http://127.0.0.1:<[api] port>]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Call the serve on this port of 127.0.0.1.", show_default=False),
    ] = None,
    service_role: Annotated[bool, typer.Option("--service-role", help="Use the service_role key.")] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="anon | service_role | publishable | secret (default anon).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Call as this signed-in user (a fresh access token).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the request's background tasks.")] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds to wait for the response (and with --wait, for the tasks)."),
    ] = 60.0,
    json_output: JsonOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Call a function on a running `edgecli serve`."""
    from edgecli.inspect import invoke as invoke_mod

    args = invoke_mod.InvokeArgs(
        name=name,
        data=data,
        method=method,
        headers=tuple(headers or ()),
        path=path,
        url=url,
        port=port,
        service_role=service_role,
        key=key,
        user=user,
        wait=wait,
        timeout=timeout,
        json_output=json_output,
    )
    raise typer.Exit(_run(lambda: invoke_mod.run(_workdir(ctx, workdir), args, _output())))


@app.command()
def logs(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new events.")] = False,
    function: Annotated[str | None, typer.Option("--function", help="Only this function.")] = None,
    request: Annotated[str | None, typer.Option("--request", help="Only this request id.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task id.")] = None,
    level: Annotated[
        str | None,
        typer.Option("--level", help="debug | info | warning | error: this level and more severe."),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="10m, 2h, 1d or ISO time.")] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Newest N events.")] = 100,
    json_output: JsonOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Print events from the event store, oldest first."""
    from edgecli.inspect import logs as logs_mod

    args = logs_mod.LogsArgs(
        follow=follow,
        function=function,
        request=request,
        task=task,
        level=level,
        since=since,
        lines=lines,
        json_output=json_output,
    )

    def go() -> int:
        return logs_mod.run(_workdir(ctx, workdir), args, _output())

    raise typer.Exit(_until_ctrl_c(go) if follow else _run(go))


@tasks_app.callback(invoke_without_command=True)
def tasks(
    ctx: typer.Context,
    function: Annotated[str | None, typer.Option("--function", help="Only this function.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="running | completed | failed | cancelled")
    ] = None,
    request: Annotated[str | None, typer.Option("--request", help="Only this request id.")] = None,
    json_output: JsonOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """List background tasks (`edgecli tasks show ID` for one task's timeline)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"workdir": _workdir(ctx, workdir)}
        return
    from edgecli.inspect import tasks as tasks_mod

    args = tasks_mod.TasksArgs(function=function, status=status, request=request, json_output=json_output)
    raise typer.Exit(_run(lambda: tasks_mod.run(_workdir(ctx, workdir), args, _output())))


@tasks_app.command("show")
def tasks_show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    json_output: JsonOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """One task: its timeline, log lines and traceback."""
    from edgecli.inspect import tasks as tasks_mod

    # --workdir may come after `show`, after `tasks` (the group's callback keeps it), or before both.
    given_to_tasks = (ctx.parent.obj or {}).get("workdir") if ctx.parent else None
    wd = workdir or given_to_tasks or _workdir(ctx, None)
    raise typer.Exit(_run(lambda: tasks_mod.show(wd, task_id, json_output, _output())))


DEFAULT_INSPECT = "127.0.0.1:5678"  # debugpy's usual port, what editors' attach configurations expect


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
    _output().error(message)
    raise typer.Exit(2)


def _bare_inspect(args: list[str]) -> list[str]:
    """`--inspect` alone means the default address: its value is given only as `--inspect=HOST:PORT`, so
    that `serve --inspect hello` reads `hello` as the function."""
    return [f"--inspect={DEFAULT_INSPECT}" if arg == "--inspect" else arg for arg in args]


def _list_functions(ctx: typer.Context, workdir: Path | None, json_output: bool) -> None:
    from edgecli.inspect import functions as functions_mod

    raise typer.Exit(_run(lambda: functions_mod.run(_workdir(ctx, workdir), json_output, _output())))


@functions_app.command("list")
def functions_list(ctx: typer.Context, json_output: JsonOpt = False, workdir: WorkdirOpt = None) -> None:
    """Every function: entrypoint, verify_jwt, policy and limits, static files, dependencies; workers and
    requests served when `edgecli serve` runs."""
    given_to_group = (ctx.parent.obj or {}).get("workdir") if ctx.parent else None
    _list_functions(ctx, workdir or given_to_group, json_output)


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOpt = False, workdir: WorkdirOpt = None) -> None:
    """The functions, their settings and workers (functions list)."""
    _list_functions(ctx, workdir, json_output)


def main() -> None:
    app(args=_bare_inspect(sys.argv[1:]), prog_name="edgecli")
