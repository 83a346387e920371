"""The Typer app and what every command shares: its options, its one output object, and turning an
`EdgecliError` into a one-paragraph message on stderr with the error's exit status (1 failed operation,
2 bad usage/config)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from edgecli import __version__
from edgecli.errors import EdgecliError

if TYPE_CHECKING:
    from edgecli.console import Output


def option(*param_decls: Any, **kwargs: Any) -> Any:
    """`typer.Option`, without an env var in its bad-value errors: no option reads one, and Click 8.2 names
    a missing one as 'None' ("Invalid value for '--port' (env var: 'None')")."""
    return typer.Option(*param_decls, show_envvar=False, **kwargs)


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
    option("--workdir", help="Project directory (holds supabase/config.toml).", show_default=False),
]
JsonOpt = Annotated[bool, option("--json", help="One JSON object per line.")]


def output() -> Output:
    from edgecli.console import Output

    return Output()


def run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except EdgecliError as exc:
        output().error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def until_ctrl_c(fn: Callable[[], int]) -> int:
    """Run a command that runs until Ctrl-C: Ctrl-C is how it ends, so it ends with status 0 wherever it
    lands (between loops, during a read, while closing), and a second one while exiting is ignored."""
    try:
        return run(fn)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def workdir_of(ctx: typer.Context, workdir: Path | None) -> Path | None:
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
        bool, option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = {"workdir": workdir}
