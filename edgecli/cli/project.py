"""`init` and `new`: a project and its functions, from templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecli.cli.app import WorkdirOpt, app, option, output, run, workdir_of


@app.command(short_help="Write supabase/config.toml (with [edge_runtime]) and functions/.")
def init(
    ctx: typer.Context,
    force: Annotated[bool, option("--force", help="Overwrite an existing config.toml.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Write supabase/config.toml (documented [edge_runtime]) and supabase/functions/."""
    from edgecli import project

    target = workdir_of(ctx, workdir) or Path.cwd()
    run(lambda: project.init_project(target, force=force, output=output()))


@app.command(short_help="Scaffold a function from a template; adds [functions.NAME].")
def new(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Function name: ^[A-Za-z][A-Za-z0-9_-]*$")] = None,
    template: Annotated[str, option("--template", "-t", help="Template to start from.")] = "hello",
    list_templates: Annotated[bool, option("--list", help="List the templates.")] = False,
    auth: Annotated[
        str | None, option("--auth", help="Who may call it: user | apikey | none (verify_jwt off).")
    ] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Scaffold supabase/functions/NAME/ from a template and add [functions.NAME] to config.toml."""
    from edgecli import project

    out = output()
    if list_templates:
        run(lambda: project.print_templates(out))
        return
    run(
        lambda: project.new_function(workdir_of(ctx, workdir), name, template=template, output=out, auth=auth)
    )
