"""What the CLI loads to start: the cheap commands import no Rich console, Markdown or HTTP client.

The time itself is measured by bench/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = """
import json, sys
from edgecli.cli import main
sys.argv = ["edgecli", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("invoke", "--help")])
def test_version_and_help_load_no_markdown_and_no_http_client(args: tuple[str, ...]) -> None:
    loaded = modules_loaded_by(*args)
    assert "rich.markdown" not in loaded
    assert "httpx" not in loaded


def test_version_loads_no_rich_and_no_config_parser() -> None:
    loaded = modules_loaded_by("--version")
    assert not {m for m in loaded if m == "rich" or m.startswith("rich.")}
    assert "edgecli.config" not in loaded and "tomllib" not in loaded
