"""Kills the control plane if the process that started it dies without stopping it.

Run as a script by `procs.Supervisor`, in its own session. It reads `+PGID` / `-PGID` lines on stdin.
Stdin reaches EOF when the parent exits for any reason (even SIGKILL), and then every process group
still registered is terminated: no etcd or apiserver outlives a crashed pytest session.
Standalone on purpose: it imports nothing from the harness.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_groups(groups: set[int], grace_s: float = 5.0) -> None:
    for pgid in groups:
        if _alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in groups:
        if _alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    # Ctrl-C in a developer's terminal is the parent's to handle; we only act on EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        op, value = line[:1], line[1:].strip()
        if op == "+" and value.isdigit():
            groups.add(int(value))
        elif op == "-" and value.isdigit():
            groups.discard(int(value))
    kill_groups(groups)


if __name__ == "__main__":
    main()
