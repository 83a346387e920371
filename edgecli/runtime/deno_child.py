"""The fork server's child side for a Deno worker: become `deno run` of edgecli's TypeScript worker.

The child keeps what the fork server set up for any worker (its pid, the parent-death signal, which
survives exec), and hands Deno the worker socket as stdin and stdout: Deno reads and writes those
without extra permissions, and the TypeScript worker speaks the usual frames over them.
"""

from __future__ import annotations

import os
from typing import NoReturn

from edgecli.runtime.worker import WorkerSpec


def exec_worker(spec: WorkerSpec, sock_fd: int, out_fd: int, err_fd: int, lend_fd: int) -> NoReturn:
    try:
        os.close(lend_fd)  # serve lends connections to Python workers only
        os.dup2(sock_fd, 0)
        os.dup2(sock_fd, 1)
        os.dup2(err_fd, 2)
        for fd in (sock_fd, out_fd, err_fd):
            os.close(fd)
        os.chdir(spec.directory)
        # The host decides how a worker stops (STOP, then beforeunload), not a Ctrl-C sent to serve's
        # process group. A Python worker ignores SIGINT as the fork server does; Deno resets SIGINT to
        # its default at start, so it gets a process group of its own instead.
        os.setpgid(0, 0)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except BaseException as exc:  # exec failed: say why on stderr, which the host logs
        os.write(2, f"cannot start Deno ({spec.argv[0]}): {exc}\n".encode())
    os._exit(70)
