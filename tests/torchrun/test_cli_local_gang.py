"""The gang loop under `torchjob run` with plain-Python stand-in agents (no torch): signal deaths are
retryable, and a process that left its agent's process group is still swept up."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from torchjob_cli.localrun import NodePlan, Outcome, RestartPolicy, run_gang

KILL_SELF = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


def plan(tmp_path: Path, node: int, code: str) -> NodePlan:
    return NodePlan(
        node_rank=node,
        argv=[sys.executable, "-c", code],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
        log_file=tmp_path / f"node-{node}.log",
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_a_node_killed_by_a_signal_restarts_the_gang(tmp_path: Path) -> None:
    lines: list[tuple[int, str]] = []
    events: list[str] = []

    def plans(attempt: int) -> list[NodePlan]:
        first = KILL_SELF if attempt == 0 else "print('node 0 ok')"
        return [plan(tmp_path, 0, first), plan(tmp_path, 1, "print('node 1 ok')")]

    result = run_gang(
        plans,
        RestartPolicy(backoff_limit=2),
        on_line=lambda n, s: lines.append((n, s)),
        on_event=events.append,
        grace=2,
    )
    assert (result.outcome, result.exit_code, result.restarts) == (Outcome.SUCCEEDED, 0, 1)
    assert events == [
        "node 0 exited with code 137 (retryable): restarting the gang in 0s (restart 1 of backoffLimit 2)"
    ]
    assert (0, "node 0 ok") in lines
    assert "--- attempt 1" in (tmp_path / "node-0.log").read_text()


def test_a_failed_node_stops_the_others_and_their_escaped_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    # Node 1 starts a grandchild in a new process group (as some launchers do), then waits forever.
    escape = (
        "import os, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], process_group=0)\n"
        f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
        "print('spawned', flush=True)\n"
        "time.sleep(600)\n"
    )
    fail_later = (
        f"import os, time\nwhile not os.path.exists({str(pid_file)!r}): time.sleep(0.05)\nraise SystemExit(3)"
    )
    result = run_gang(
        lambda attempt: [plan(tmp_path, 0, fail_later), plan(tmp_path, 1, escape)],
        RestartPolicy(backoff_limit=3),
        on_line=lambda n, s: None,
        on_event=lambda s: None,
        grace=2,
    )
    assert (result.outcome, result.exit_code, result.failed_node) == (Outcome.FAILED, 3, 0)
    assert "node 0 exited with code 3 (permanent)" in result.message
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
