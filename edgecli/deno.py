"""Where the Deno executable that serves TypeScript and JavaScript functions comes from."""

from __future__ import annotations

import shutil
from functools import cache

INSTALL_HINT = "install it with `pip install 'edgecli[deno]'` (or put `deno` on PATH)"


@cache
def deno_binary() -> str | None:
    """The deno executable the `deno` package from PyPI ships (the extra edgecli[deno]), else one on PATH."""
    try:
        import deno
    except ImportError:
        return shutil.which("deno")
    return str(deno.find_deno_bin())
