"""Process supervision for local runs: a node is its agent and everything the agent started.

Each torchrun agent starts in its own session (`start_new_session=True`), so Ctrl-C in the terminal
reaches the CLI alone. The agent's workers are not in that session: torch starts every worker in a new
session of its own (`SubprocessHandler`, `start_new_session=True`), and a worker whose agent died is
reparented away from it, so neither the session nor the process tree finds all of a node. Each agent
therefore gets a marker in its env (`MARKER_ENV`, a fresh token per start) that its workers, their
DataLoader workers and anything else below inherit: a node's processes are the agent's session plus
every process carrying its marker, as a pod's are its cgroup.

Stopping a node SIGTERMs the agent's session (the agent passes it on to its workers and waits for
them, as a kubelet signals a container's main process), then, after the grace, SIGKILLs every process
of the node, wherever it is. A pod's `/dev/shm` goes with the pod; a local node's is the host's, and
what a SIGKILLed process had there stays until something unlinks it. Two processes of a node exist to
do that: torch's shm manager (the shared-memory files of DataLoader batches, under the `file_system`
strategy) and multiprocessing's resource tracker (the named semaphores of torch elastic's forkserver
workers) unlink what their dead clients left and exit. So they are SIGKILLed last, once they had
CLEANUP_SECONDS to do it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

GRACE_SECONDS = 10.0
POLL_SECONDS = 0.05
# torch's shm manager exits 2 s after its last client; the resource tracker at once.
CLEANUP_SECONDS = 5.0
SHM_MANAGER = b"torch_shm_manager"
RESOURCE_TRACKER = b"from multiprocessing.resource_tracker import main"
# Not a trainer setting: the name only marks whose process it is (base_env drops the shell's TORCHJOB_*).
MARKER_ENV = "TORCHJOB_LOCAL_NODE_MARKER"


@dataclasses.dataclass(frozen=True)
class Node:
    """One started agent (its pid is its session id) and the marker its descendants carry."""

    proc: subprocess.Popen[bytes]
    marker: str


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> Node:
    """Start an agent in a session of its own, output piped (stderr into stdout)."""
    marker = secrets.token_hex(8)
    proc = subprocess.Popen(
        list(argv),
        env={**env, MARKER_ENV: marker},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own session: Ctrl-C reaches us only; we stop it
    )
    return Node(proc, marker)


def _live_processes() -> Iterator[tuple[int, int, Path]]:
    """(pid, session id, /proc entry) of every process that is not a zombie (Linux; none elsewhere)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            yield int(entry.name), int(fields[3]), entry


def _carries(entry: Path, needles: set[bytes]) -> bool:
    try:
        return not needles.isdisjoint((entry / "environ").read_bytes().split(b"\0"))
    except OSError:  # gone, or another user's
        return False


def members(nodes: Iterable[Node], *, marked: bool = True) -> list[int]:
    """Pids of the nodes' processes: in an agent's session, or (`marked`) carrying a node's marker."""
    nodes = list(nodes)
    sids = {n.proc.pid for n in nodes}
    needles = {f"{MARKER_ENV}={n.marker}".encode() for n in nodes} if marked else set()
    me = os.getpid()
    return [
        pid
        for pid, sid, entry in _live_processes()
        if pid != me and (sid in sids or (needles and _carries(entry, needles)))
    ]


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(nodes: Iterable[Node]) -> None:
    """SIGTERM each agent's session: its process group and any member outside it."""
    nodes = list(nodes)
    for node in nodes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, signal.SIGTERM)
    _signal(members(nodes, marked=False), signal.SIGTERM)


def stop(
    nodes: Iterable[Node], *, grace: float = GRACE_SECONDS, abort: Callable[[], bool] = lambda: False
) -> None:
    """SIGTERM every node, wait up to `grace` seconds (less once `abort()` is true), then SIGKILL what is
    left. Returns once no process of any node is alive and every agent is reaped."""
    nodes = list(nodes)
    terminate(nodes)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not abort():
        for node in nodes:
            node.proc.poll()
        if not members(nodes):
            break
        time.sleep(POLL_SECONDS)
    kill(nodes)


def cleans_up(pid: int) -> bool:
    """Whether the process is one that unlinks its dead clients' shared memory and then exits."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0]) == SHM_MANAGER or any(a.startswith(RESOURCE_TRACKER) for a in argv)


def kill(nodes: Iterable[Node]) -> None:
    """SIGKILL every process of the nodes until none is left, the cleanup processes last; reap the
    agents."""
    nodes = list(nodes)
    _kill_all(nodes, spare=cleans_up)
    deadline = time.monotonic() + CLEANUP_SECONDS
    while members(nodes) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    _kill_all(nodes, spare=lambda _pid: False)
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=5)


def _kill_all(nodes: list[Node], *, spare: Callable[[int], bool]) -> None:
    """SIGKILL the nodes' processes but those `spare` keeps, again until none is left (a process may
    fork while it is being killed)."""
    for _ in range(100):
        alive = [pid for pid in members(nodes) if not spare(pid)]
        if not alive:
            return
        _signal(alive, signal.SIGKILL)
        time.sleep(POLL_SECONDS)
