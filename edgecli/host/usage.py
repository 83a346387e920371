"""What a worker's process tree uses: CPU time and resident memory of the worker and everything it started.

The tree is walked through each process's own list of children (`/proc/<pid>/task/<tid>/children` on
Linux), which costs a few file reads. psutil's `children()` instead reads every process on the machine,
and the supervisor samples each worker many times a second; it is kept only as the fallback where the
kernel has no such lists.

A worker's tree is what its keeper (runtime/keeper.py) holds: the worker, what the worker started, and
the orphans of those, which the keeper adopted.
"""

from __future__ import annotations

import contextlib
import os

import psutil

KEEPER_NAME = "edgecli-keeper"  # runtime/keeper.py names its process so (not imported: host side)


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (none if it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    except OSError:
        return _psutil_children(pid)
    children: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as listing:
                children.extend(int(child) for child in listing.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return _psutil_children(pid)  # a kernel without children lists
        except OSError:
            continue
    return children


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before grandchildren."""
    found: list[int] = []
    queue = child_pids(pid)
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(child_pids(child))
    return found


def _psutil_children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def keeper_of(pid: int) -> psutil.Process | None:
    """The keeper above the worker `pid`, if it has one."""
    try:
        above = psutil.Process(psutil.Process(pid).ppid())
        return above if above.name() == KEEPER_NAME else None
    except psutil.Error:
        return None


class TreeUsage:
    """Samples one worker's tree; keeps its psutil handles between samples (each costs a read)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._processes: dict[int, psutil.Process] = {}
        self._keeper = keeper_of(pid)

    def tree(self) -> list[int]:
        """The worker first, then everything below it and its keeper (the keeper itself uses next to
        nothing of its own, and counting its pages, shared with the fork server, would count them twice)."""
        if self._keeper is not None and self._keeper.is_running():
            below = [p for p in descendants(self._keeper.pid) if p != self.pid]
        else:
            below = descendants(self.pid)
        return [self.pid, *below]

    def sample(self) -> tuple[float, float] | None:
        """(CPU ms, resident MB) summed over the tree now; None once the worker itself is gone."""
        pids = self.tree()
        for gone in set(self._processes) - set(pids):
            del self._processes[gone]
        cpu_s = rss = 0.0
        for pid in pids:
            try:
                process = self._processes.get(pid) or self._processes.setdefault(pid, psutil.Process(pid))
                with process.oneshot():
                    times = process.cpu_times()
                    cpu_s += times.user + times.system
                    rss += process.memory_info().rss
            except psutil.Error:
                if pid == self.pid:
                    return None
                with contextlib.suppress(KeyError):
                    del self._processes[pid]
        return cpu_s * 1000, rss / (1024 * 1024)
