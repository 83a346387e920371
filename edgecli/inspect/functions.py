"""`edgecli functions list` (and `edgecli list`): every function as config.toml and the folders define it,
and, when a serve of this project runs, its workers, their state and the requests they served.

The running serves are found through the status file each writes under supabase/.temp/edgecli/ (see
edgecli/host/status.py); a stale file (serve killed) or a serve that does not answer is "not running".
With two serves of the project, a function's workers and requests are those of both.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from edgecli.config import Config, FunctionConfig, load_config
from edgecli.console import Cell, Output, print_table
from edgecli.host.status import status_files
from edgecli.project import find_project

STATUS_TIMEOUT_S = 2.0


def run(workdir: Path | None, json_output: bool, output: Output) -> int:
    config = load_config(find_project(workdir))
    status = running_status(config)
    records = [function_record(config, fn, status) for fn in config.functions.values()]
    records += [skipped_record(line) for line in config.skipped]
    if json_output:
        for record in records:
            output.out.file.write(json.dumps(record) + "\n")
        output.out.file.flush()
        return 0
    if not records:
        output.line("No functions yet: create one with `edgecli new NAME`.")
        return 0
    print_table(output, _COLUMNS, [_row(r) for r in records])
    if status is None:
        output.line("Not being served: `edgecli serve` runs them (`--json` for every field).")
    else:
        serves = "; ".join(f"pid {serve.get('pid')} at {serve.get('url')}" for serve in status["serves"])
        output.line(f"Served by edgecli serve ({serves}).")
    return 0


def running_status(config: Config) -> dict[str, Any] | None:
    """What the running serves say, as one status (each function's workers and requests those of all of
    them, `serves` who they are), or None when no serve of this project answers."""
    statuses = [status for path in status_files(config.state_dir) if (status := _ask(path)) is not None]
    if not statuses:
        return None
    merged: dict[str, Any] = {**statuses[0], "functions": {}, "serves": statuses}
    for status in statuses:
        for name, served in (status.get("functions") or {}).items():
            if not isinstance(served, dict):
                continue
            seen = merged["functions"].setdefault(name, {**served, "workers": [], "requests": 0})
            seen["workers"] += served.get("workers") or []
            seen["requests"] += served.get("requests") or 0
            seen["boot_error"] = seen.get("boot_error") or served.get("boot_error")
    return merged


def _ask(path: Path) -> dict[str, Any] | None:
    """One serve's status, from its status file; None when it is stale or the serve does not answer."""
    try:
        advert = json.loads(path.read_text(encoding="utf-8"))
        pid, url = int(advert["pid"]), str(advert["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not psutil.pid_exists(pid):  # a serve killed outright leaves its file behind
        return None
    try:
        response = httpx.get(url, timeout=STATUS_TIMEOUT_S)
        response.raise_for_status()
        status = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _shown(config: Config, path: Path) -> str:
    try:
        return path.relative_to(config.project_dir).as_posix()
    except ValueError:
        return str(path)


def function_record(config: Config, fn: FunctionConfig, status: dict[str, Any] | None) -> dict[str, Any]:
    """One function's `functions list --json` object."""
    record: dict[str, Any] = {
        "name": fn.name,
        "entrypoint": _shown(config, fn.entrypoint),
        "enabled": True,
        "verify_jwt": fn.verify_jwt,
        "policy": config.policy,
        "limits": asdict(fn.limits),
        "static_files": [_shown(config, p) for p in fn.static_files],
        "dependencies": _shown(config, fn.dependencies) if fn.dependencies else None,
        "serving": False,
        "workers": [],
        "requests": None,
    }
    served = (status or {}).get("functions", {}).get(fn.name)
    if isinstance(served, dict):
        record.update(
            serving=True,
            policy=status.get("policy", config.policy) if status else config.policy,
            verify_jwt=served.get("verify_jwt", fn.verify_jwt),
            workers=served.get("workers", []),
            requests=served.get("requests", 0),
            boot_error=served.get("boot_error"),
        )
    return record


def skipped_record(line: str) -> dict[str, Any]:
    """A function folder or block that is not served (disabled, not Python...), from Config.skipped."""
    name, _, reason = line.partition(": ")
    return {"name": name, "enabled": not reason.startswith("disabled"), "skipped": reason, "serving": False}


_COLUMNS = (
    "function",
    "entrypoint",
    "verify_jwt",
    "policy",
    "limits",
    "static",
    "deps",
    "workers",
    "requests",
)


def _row(record: dict[str, Any]) -> list[Cell]:
    if "skipped" in record:
        return [record["name"], (record["skipped"], "warn"), "", "", "", "", "", "", ""]
    limits = record["limits"]
    brief = (
        f"{limits['memory_limit_mb']} MB, cpu {limits['cpu_time_soft_limit_ms']}/"
        f"{limits['cpu_time_hard_limit_ms']} ms, wall {limits['wall_clock_limit_sec']:g} s"
    )
    workers: Cell = "-"
    if record["serving"]:
        states = [w.get("state", "?") for w in record["workers"]]
        text = f"{len(states)} ({', '.join(states)})" if states else "0"
        workers = (
            (f"boot error: {record['boot_error']}".splitlines()[0], "bad")
            if record.get("boot_error")
            else text
        )
    return [
        record["name"],
        record["entrypoint"],
        "yes" if record["verify_jwt"] else "no",
        record["policy"],
        brief,
        str(len(record["static_files"])) if record["static_files"] else "-",
        Path(record["dependencies"]).name if record["dependencies"] else "-",
        workers,
        str(record["requests"]) if record["requests"] is not None else "-",
    ]
