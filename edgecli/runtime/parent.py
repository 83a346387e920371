"""No orphans: the process-tree rules every worker and the fork server live by (Linux).

A process that must not outlive its parent asks the kernel to signal it when the parent dies; a process
whose descendants must not escape to PID 1 becomes a subreaper, so orphans are re-parented to it and it
can kill them. Elsewhere these are no-ops and the pipe-EOF paths cover what they can.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
# Looked up once, at import: the fork server imports this module, so a forked worker calls prctl
# straight away instead of loading libc through ctypes again (~0.3 ms of every oneshot instance).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to this process when `parent` exits. SIGKILL unless the process cleans up first."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    # The parent may have died before prctl took effect: then we were re-parented already.
    if os.getppid() != parent:
        os._exit(1)


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of PID 1."""
    if _prctl is not None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def set_name(name: bytes) -> None:
    """This process's name as ps and /proc/<pid>/comm show it (15 bytes at most)."""
    if _prctl is not None:
        _prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


def get_name() -> bytes:
    """This process's name (as set_name takes it)."""
    try:
        with open("/proc/self/comm", "rb") as f:
            return f.read().strip()
    except OSError:
        return b"python"


def children() -> list[int]:
    """The pids of this (single-threaded) process's children."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []  # a kernel without CONFIG_PROC_CHILDREN: scan every process's parent
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def kill_group(pgid: int) -> None:
    """SIGKILL the whole process group `pgid` (a worker's: everything it started and did not move)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# The standard signals, less those nobody can catch and those Python itself ignores at start-up
# (every Python process has those). Listed once, at import, in the fork server.
_RESETTABLE = tuple(
    sig
    for sig in signal.Signals
    if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ)
    and sig < getattr(signal, "SIGRTMIN", 32)
)


def restore_signals() -> None:
    """Default signal dispositions and an empty mask, whatever the fork server or serve's own parent
    (a shell's background job ignores SIGINT and SIGQUIT) set: what a function starts inherits them,
    so a subprocess stops on SIGINT/SIGTERM as it should."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in _RESETTABLE:
        if signal.getsignal(sig) not in (signal.SIG_DFL, None):
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
