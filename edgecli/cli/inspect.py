"""The commands that call a running serve or read the event store: `invoke`, `logs`, `tasks`, `list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecli.cli.app import (
    JsonOpt,
    WorkdirOpt,
    app,
    functions_app,
    option,
    output,
    run,
    tasks_app,
    until_ctrl_c,
    workdir_of,
)


@app.command()
def invoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Function to call.")],
    data: Annotated[
        str | None, option("--data", "-d", help="Body: JSON text, @file, or - for stdin.")
    ] = None,
    method: Annotated[str | None, option("-X", "--request", help="HTTP method (default: POST).")] = None,
    headers: Annotated[
        list[str] | None, option("-H", "--header", help="A request header, 'Key: Value'; repeatable.")
    ] = None,
    path: Annotated[str, option("--path", help="Sub-path inside the function.")] = "",
    url: Annotated[
        str | None,
        option(
            "--url",
            help="Server base URL.  [default: the running serve's, else http://127.0.0.1:<[api] port>]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        option("--port", help="Call the serve on this port of 127.0.0.1.", show_default=False),
    ] = None,
    service_role: Annotated[bool, option("--service-role", help="Use the service_role key.")] = False,
    key: Annotated[
        str | None, option("--key", help="anon | service_role | publishable | secret (default anon).")
    ] = None,
    user: Annotated[
        str | None, option("--user", help="Call as this signed-in user (a fresh access token).")
    ] = None,
    wait: Annotated[bool, option("--wait", help="Follow the request's background tasks.")] = False,
    timeout: Annotated[
        float,
        option("--timeout", help="Seconds to wait for the response (and with --wait, for the tasks)."),
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
    raise typer.Exit(run(lambda: invoke_mod.run(workdir_of(ctx, workdir), args, output())))


@app.command()
def logs(
    ctx: typer.Context,
    follow: Annotated[bool, option("-f", "--follow", help="Keep printing new events.")] = False,
    function: Annotated[str | None, option("--function", help="Only this function.")] = None,
    request: Annotated[str | None, option("--request", help="Only this request id.")] = None,
    task: Annotated[str | None, option("--task", help="Only this task id.")] = None,
    level: Annotated[
        str | None,
        option("--level", help="debug | info | warning | error: this level and more severe."),
    ] = None,
    since: Annotated[str | None, option("--since", help="10m, 2h, 1d or ISO time.")] = None,
    lines: Annotated[int, option("-n", "--lines", help="Newest N events.")] = 100,
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
        return logs_mod.run(workdir_of(ctx, workdir), args, output())

    raise typer.Exit(until_ctrl_c(go) if follow else run(go))


@tasks_app.callback(invoke_without_command=True)
def tasks(
    ctx: typer.Context,
    function: Annotated[str | None, option("--function", help="Only this function.")] = None,
    status: Annotated[str | None, option("--status", help="running | completed | failed | cancelled")] = None,
    request: Annotated[str | None, option("--request", help="Only this request id.")] = None,
    json_output: JsonOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """List background tasks (`edgecli tasks show ID` for one task's timeline)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"workdir": workdir_of(ctx, workdir)}
        return
    from edgecli.inspect import tasks as tasks_mod

    args = tasks_mod.TasksArgs(function=function, status=status, request=request, json_output=json_output)
    raise typer.Exit(run(lambda: tasks_mod.run(workdir_of(ctx, workdir), args, output())))


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
    wd = workdir or given_to_tasks or workdir_of(ctx, None)
    raise typer.Exit(run(lambda: tasks_mod.show(wd, task_id, json_output, output())))


def _list_functions(ctx: typer.Context, workdir: Path | None, json_output: bool) -> None:
    from edgecli.inspect import functions as functions_mod

    raise typer.Exit(run(lambda: functions_mod.run(workdir_of(ctx, workdir), json_output, output())))


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
