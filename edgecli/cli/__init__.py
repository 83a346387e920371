"""Typer commands. Thin on purpose: parse → Config → call a library function → exit status.

Everything a user can get wrong surfaces as an `EdgecliError` from the library; `app.run` turns it into
a one-paragraph message on stderr and the error's exit status. The commands live by what they are about
(`project`, `serve`, `deploy`, `inspect`); importing them here registers them on the app, in the order
the help lists them.

Each command imports what it needs when it runs: `edgecli --version` and `--help` load no Rich console,
no HTTP client and no config parser (tests/test_startup.py checks the imports, bench/bench_startup.py the
time).
"""

from __future__ import annotations

import sys

from edgecli.cli.app import app

# Importing a module registers its commands: this order is the order the help lists them in.
# isort: off
from edgecli.cli import project, serve, deploy, inspect
# isort: on

__all__ = ["app", "deploy", "inspect", "main", "project", "serve"]


def main() -> None:
    app(args=serve.bare_inspect(sys.argv[1:]), prog_name="edgecli")
