"""Two `edgecli serve`s on one project write one store: under load from both, every event of each is
stored exactly once and in the order its serve sent it, and `logs -f` and `invoke --wait` see them."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
from serving import Served, following_logs, make_project, run_cli, stored_events, wait_until

FUNCTION = """
from starlette.responses import PlainTextResponse
from edgecli import EdgeRuntime

async def job(tag):
    print(f"job {tag}")

async def handler(req):
    tag = req.query_params.get("tag", "invoked")
    for i in range(LINES):
        print(f"line {tag} {i}")
    if tag == "invoked":
        EdgeRuntime.wait_until(job(tag))
    return PlainTextResponse(tag)
"""
LINES = 10
REQUESTS = 60  # per client
CLIENTS = 2  # per serve, each sending its requests one after another
CONFIG = '[api]\nport = 54321\n\n[edge_runtime]\npolicy = "per_worker"\nmax_parallelism = 1\n'


def _load(srv: Served, name: str, client: int) -> None:
    for n in range(REQUESTS):
        response = srv.get(name, params={"tag": f"{name}{client}-{n}"})
        assert response.status_code == 200, response.text


def _lines(messages: list[str]) -> list[tuple[str, int, int]]:
    """(client, request number, line number) of every load line, in the order given."""
    found = []
    for message in messages:
        if message.startswith("line ") and not message.startswith("line invoked"):
            _, tag, line = message.split()
            client, number = tag.split("-")
            found.append((client, int(number), int(line)))
    return found


def _printed_lines(followed: list[str]) -> int:
    """How many `line ...` log lines (load and invoked) `logs -f --json` printed so far."""
    messages = [json.loads(line)["message"] for line in list(followed)]
    return sum(1 for message in messages if message.startswith("line "))


def _check_every_line_once_in_order(found: list[tuple[str, int, int]]) -> None:
    clients = [f"{name}{c}" for name in "ab" for c in range(CLIENTS)]
    expected = {(client, n, i) for client in clients for n in range(REQUESTS) for i in range(LINES)}
    counts = Counter(found)
    assert set(counts) == expected, sorted(expected - set(counts))[:5]
    assert set(counts.values()) == {1}, [line for line, count in counts.items() if count > 1][:5]
    for client in {client for client, _, _ in found}:
        mine = [(n, i) for c, n, i in found if c == client]
        assert mine == sorted(mine), f"{client}'s events out of order"


@pytest.mark.timeout(180)
def test_two_serves_write_one_store_and_readers_see_every_event_once(tmp_path: Path) -> None:
    source = FUNCTION.replace("LINES", str(LINES))
    project = make_project(tmp_path, {"a": source, "b": source}, CONFIG)
    store = project / "supabase" / ".temp" / "edgecli" / "events.db"
    total = 2 * CLIENTS * REQUESTS * LINES
    with (
        Served(project, "a") as first,
        Served(project, "b") as second,
        following_logs(project, "-n", "1") as (follower, followed),  # prints the newest event, then more
    ):
        wait_until(lambda: followed, timeout=30, what="`logs -f` to read the store")
        clients = [
            threading.Thread(target=_load, args=(srv, name, c))
            for srv, name in ((first, "a"), (second, "b"))
            for c in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        # While both take load, `invoke --wait` on the first one follows its request to the end.
        invoked = run_cli(project, "invoke", "a", "--url", first.base_url, "--wait")
        for client in clients:
            client.join(timeout=120)
        assert invoked.returncode == 0, invoked.stdout + invoked.stderr
        assert "line invoked 0" in invoked.stdout and "job invoked" in invoked.stdout
        assert invoked.stdout.rstrip().endswith("1 task: 1 completed"), invoked.stdout
        # The invoked request may be the last one stored: wait for its lines too, not only the load's.
        wait_until(
            lambda: _printed_lines(followed) >= total + LINES,
            timeout=60,
            what="`logs -f` to print every load line and the invoked request's",
        )
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
    stored = stored_events(store)
    _check_every_line_once_in_order(_lines([event.message for event in stored]))
    records = [json.loads(line) for line in followed]
    _check_every_line_once_in_order(_lines([record["message"] for record in records]))
    assert [r["message"] for r in records if r["kind"] == "log" and r["message"].startswith("line ")] == [
        e.message for e in stored if e.kind == "log" and e.message.startswith("line ")
    ]
    requests = Counter(e.function for e in stored if e.kind == "request")
    assert requests == {"a": CLIENTS * REQUESTS + 1, "b": CLIENTS * REQUESTS}
