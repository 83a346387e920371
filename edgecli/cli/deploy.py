"""`build` and `export`: a container image for `serve --prod`, and manifests to run it."""

from __future__ import annotations

from typing import Annotated

import typer

from edgecli.cli.app import WorkdirOpt, app, option, output, run, workdir_of


@app.command(short_help="Write a Dockerfile for `serve --prod`; run docker build.")
def build(
    ctx: typer.Context,
    tag: Annotated[str | None, option("--tag", "-t", help="Image tag (default: <project>:latest).")] = None,
    python: Annotated[str, option("--python", help="Python version of the base image.")] = "3.12",
    force: Annotated[bool, option("--force", help="Replace a Dockerfile edgecli did not write.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Write a Dockerfile (entrypoint `edgecli serve --prod`) and .dockerignore; run docker build if there."""
    import os

    from edgecli.deploy import build as deploy

    def go() -> int:
        return deploy.build(
            workdir_of(ctx, workdir), output(), os.environ, tag=tag, python=python, force=force
        )

    raise typer.Exit(run(go))


@app.command(short_help="Print Knative, Kubernetes or compose manifests.")
def export(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="knative | kubernetes | compose")],
    image: Annotated[str | None, option("--image", help="Image (default: <project>:latest).")] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Print manifests for an engine: a Knative Service, a Kubernetes Deployment + Service, or compose."""
    import os

    from edgecli.deploy import build as deploy

    raise typer.Exit(
        run(lambda: deploy.export(workdir_of(ctx, workdir), target, output(), os.environ, image))
    )
