"""Process-group supervision for local runs.

Each torchrun agent starts in its own session (`start_new_session=True`), so the agent, its workers and
their DataLoader workers share one session id. Stopping a node signals the whole group; cleanup then
sweeps /proc for anything still in the session, because a worker that calls setpgid would escape a
plain group kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

GRACE_SECONDS = 10.0


def session_members(sid: int) -> list[int]:
    """Pids whose session id is `sid` (Linux /proc; empty elsewhere)."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def signal_session(sid: int, sig: int) -> None:
    """Send `sig` to the process group `sid` and to any session member outside it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_sessions(procs: Iterable[subprocess.Popen[bytes]], *, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every session, wait up to `grace` seconds, then SIGKILL what is left.

    Returns once no member of any session is alive and every Popen is reaped.
    """
    procs = list(procs)
    sids = [p.pid for p in procs]
    for sid in sids:
        signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in procs:
            p.poll()
        if not any(session_members(sid) for sid in sids):
            break
        time.sleep(0.05)
    kill_sessions(procs)


def kill_sessions(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every session member until none is left; reap the Popen objects."""
    procs = list(procs)
    sids = [p.pid for p in procs]
    for _ in range(100):
        alive = [sid for sid in sids if session_members(sid)]
        if not alive:
            break
        for sid in alive:
            signal_session(sid, signal.SIGKILL)
        time.sleep(0.05)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
