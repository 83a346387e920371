"""Rendering for a person: the serve banner and tables."""

from __future__ import annotations

import io
import re

import pytest
from outputs import ANSI, coloured_output, plain_output
from rich.cells import cell_len
from rich.console import Console

from edgecli.console import Output, print_banner, print_table

pytestmark = pytest.mark.timeout(10)


def test_banner_lists_function_urls_policy_and_keys() -> None:
    output, buffer = plain_output()
    print_banner(
        output,
        project="demo",
        policy="per_worker",
        functions=[
            ("hello", "http://127.0.0.1:54321/functions/v1/hello"),
            ("jobs", "http://127.0.0.1:54321/functions/v1/jobs"),
        ],
        anon_key="anon.jwt",
        service_role_key="service.jwt",
        notes=["skipped functions/broken: no index.py"],
    )
    text = buffer.getvalue()
    assert "policy per_worker" in text and "demo" in text
    assert "Serving functions on http://127.0.0.1:54321/functions/v1/<function-name>" in text
    assert " - http://127.0.0.1:54321/functions/v1/hello\n" in text
    assert " - http://127.0.0.1:54321/functions/v1/jobs\n" in text
    assert re.search(r"anon key .*:\nanon\.jwt\n", text)
    assert re.search(r"service_role key .*:\nservice\.jwt\n", text)
    assert "skipped functions/broken: no index.py" in text
    assert "curl -i --request POST 'http://127.0.0.1:54321/functions/v1/hello' " in text
    assert "--header 'Authorization: Bearer anon.jwt'" in text
    assert text.rstrip().endswith("watching for changes · Ctrl-C to stop")
    assert "--no-verify-jwt" not in text


def test_banner_keys_and_curl_line_do_not_wrap_on_a_160_column_terminal() -> None:
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=160, force_terminal=True, color_system=None)
    anon, service = "eyJ" + "a" * 150, "eyJ" + "s" * 161  # the lengths of the real keys
    print_banner(
        Output(out=terminal, err=terminal),
        project="demo",
        policy="per_request",
        functions=[("hello", "http://127.0.0.1:54321/functions/v1/hello")],
        anon_key=anon,
        service_role_key=service,
        notes=[],
        verify_jwt=False,
        reload=False,
    )
    lines = buffer.getvalue().splitlines()
    assert anon in lines and service in lines  # whole, each on a line of its own
    curl = next(line for line in lines if "curl " in line)
    assert curl.endswith("""--data '{"name":"Functions"}'""") and "Authorization" not in curl
    assert any("JWT verification is off (--no-verify-jwt)" in line for line in lines)
    assert lines[-1] == "Ctrl-C to stop"


TABLE = (
    ["task", "name", "status", "reason / error"],
    [
        ["w1.t-1", "notify", ("completed", "good"), ""],
        ["w1.t-10", "写真を送る", ("failed", "bad"), "ValueError: " + "x" * 60],
    ],
)


def test_a_table_aligns_its_columns_by_cell_width_without_trailing_spaces() -> None:
    output, buffer = plain_output()
    print_table(output, *TABLE)
    header, rule, first, second = buffer.getvalue().splitlines()
    assert header.index("name") == first.index("notify") == second.index("写真")
    assert header.index("status") == first.index("completed")
    # The wide name takes two cells a character: its row's columns line up on screen, not by index.
    assert cell_len(second[: second.index("failed")]) == first.index("completed")
    assert set(rule) == {"─"} and len(rule) == cell_len(second)
    assert first == "w1.t-1    notify       completed"  # no trailing spaces: the last cell is empty


def test_a_table_on_a_terminal_colours_its_tones_and_folds_only_when_too_narrow() -> None:
    output, buffer = coloured_output()
    output.out.width = 200
    print_table(output, *TABLE)
    lines = buffer.getvalue().splitlines()
    assert (
        "\x1b[1mtask\x1b[0m" in lines[0]
        and "\x1b[32mcompleted" in lines[2]
        and "\x1b[1;31mfailed" in lines[3]
    )
    assert len(lines) == 4
    output, buffer = coloured_output()
    output.out.width = 40
    print_table(output, *TABLE)
    folded = [ANSI.sub("", line) for line in buffer.getvalue().splitlines()]
    assert len(folded) > 4 and all(len(line) <= 40 for line in folded)
