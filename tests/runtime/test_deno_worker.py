"""The Deno worker shipped in the package type-checks, so a TypeScript mistake in it fails here first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgecli.deno import deno_binary

WORKER = Path(__file__).resolve().parents[2] / "edgecli" / "runtime" / "deno" / "worker.ts"


@pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])")
@pytest.mark.timeout(120)
def test_the_deno_worker_type_checks() -> None:
    binary = deno_binary()
    assert binary is not None
    result = subprocess.run(
        [binary, "check", "--quiet", str(WORKER)], capture_output=True, text=True, timeout=110, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
