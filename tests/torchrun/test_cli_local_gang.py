"""The gang loop under `torchjob run` with plain-Python stand-in agents (no torch): signal deaths are
retryable, a process that left its agent's process group is still swept up, and the run ends when the
job's successPolicy holds, stopping the nodes that linger."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from torchjob_cli.localrun import NodePlan, Outcome, run_gang
from torchjob_core.failure_policy import RestartPolicy
from torchjob_core.success_policy import SuccessPolicy

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


def _wait_file(path: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.05)"


def test_an_elastic_node_is_replaced_alone_while_node_0_runs_on(tmp_path: Path) -> None:
    once, done = tmp_path / "failed-once", tmp_path / "replacement-ran"
    # Node 1 dies by SIGKILL the first time; started again alone, it lets node 0 finish.
    node1 = (
        f"import os, pathlib, signal\nif not os.path.exists({str(once)!r}):\n"
        f"    pathlib.Path({str(once)!r}).touch(); os.kill(os.getpid(), signal.SIGKILL)\n"
        f"pathlib.Path({str(done)!r}).touch()"
    )
    events: list[str] = []
    result = run_gang(
        lambda attempt: [plan(tmp_path, 0, _wait_file(done)), plan(tmp_path, 1, node1)],
        RestartPolicy(backoff_limit=2, elastic_min_nodes=1),
        on_line=lambda n, s: None,
        on_event=events.append,
        grace=2,
    )
    assert (result.outcome, result.restarts) == (Outcome.SUCCEEDED, 1), events
    assert events == [
        "node 1 exited with code 137 (retryable): replacing node 1 alone in 0s "
        "(restart 1 of backoffLimit 2); node(s) 0 keep training"
    ]
    assert (tmp_path / "node-0.log").read_text().count("--- ") == 1  # node 0 ran once, throughout
    assert "--- node 1 replaced (restart 1)" in (tmp_path / "node-1.log").read_text()


def test_elastic_failures_the_survivors_cannot_absorb_restart_the_gang(tmp_path: Path) -> None:
    once = tmp_path / "failed-once"
    fail_once = (
        f"import os, pathlib, signal\nif not os.path.exists({str(once)!r}):\n"
        f"    pathlib.Path({str(once)!r}).touch(); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    hold = "import time; time.sleep(1)"
    cases = {
        "node 0 lost": (RestartPolicy(backoff_limit=2, elastic_min_nodes=1), [fail_once, hold]),
        "below minNodes": (RestartPolicy(backoff_limit=2, elastic_min_nodes=2), [hold, fail_once]),
    }
    for name, (policy, codes) in cases.items():
        once.unlink(missing_ok=True)
        events: list[str] = []
        result = run_gang(
            lambda attempt, codes=codes: [plan(tmp_path, n, c) for n, c in enumerate(codes)],
            policy,
            on_line=lambda n, s: None,
            on_event=events.append,
            grace=2,
        )
        assert (result.outcome, result.restarts) == (Outcome.SUCCEEDED, 1), (name, events)
        assert "restarting the gang" in events[0], (name, events)
        # Elastic: the first node to succeed ends the run (AnyNode, as in a cluster), stopping the rest.
        assert all("succeeded (successPolicy AnyNode" in e for e in events[1:]), (name, events)


LINGER = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"


def test_node0_success_ends_the_run_and_stops_a_lingering_node(tmp_path: Path) -> None:
    lines: list[tuple[int, str]] = []
    events: list[str] = []
    started = time.monotonic()
    result = run_gang(
        lambda attempt: [
            plan(tmp_path, 0, _wait_file(tmp_path / "node-1.log") + "\nprint('done')"),
            plan(tmp_path, 1, LINGER),
        ],
        RestartPolicy(backoff_limit=2),
        on_line=lambda n, s: lines.append((n, s)),
        on_event=events.append,
        grace=2,
        success=SuccessPolicy("Node0"),
    )
    assert (result.outcome, result.exit_code, result.restarts) == (Outcome.SUCCEEDED, 0, 0)
    assert time.monotonic() - started < 30
    message = "node 0 succeeded (successPolicy Node0: node 0 finishing ends the job), before node(s) 1."
    assert result.message == message
    assert events == [message.removesuffix(".") + ": stopping the rest"]
    lingering = next(int(s) for n, s in lines if n == 1 and s.isdigit())
    assert not alive(lingering)


def test_the_default_waits_for_every_node_of_a_fixed_size_job(tmp_path: Path) -> None:
    flag = tmp_path / "node-0-done"
    node0 = f"import pathlib\npathlib.Path({str(flag)!r}).touch()"
    events: list[str] = []
    result = run_gang(
        lambda attempt: [plan(tmp_path, 0, node0), plan(tmp_path, 1, _wait_file(flag) + "\ntime.sleep(1)")],
        RestartPolicy(backoff_limit=2),
        on_line=lambda n, s: None,
        on_event=events.append,
        grace=2,
    )
    assert (result.outcome, events) == (Outcome.SUCCEEDED, [])
    assert result.message == "All 2 nodes succeeded (successPolicy AllNodes, the default)."
    assert (tmp_path / "node-1.log").read_text().count("--- ") == 1  # node 1 ran to its end, not stopped


def test_an_elastic_run_ends_with_its_first_node_as_the_operator_does(tmp_path: Path) -> None:
    events: list[str] = []
    result = run_gang(
        lambda attempt: [plan(tmp_path, 0, LINGER), plan(tmp_path, 1, "print('done')")],
        RestartPolicy(backoff_limit=2, elastic_min_nodes=1),  # no success given: the elastic default
        on_line=lambda n, s: None,
        on_event=events.append,
        grace=2,
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert events == [
        "node 1 succeeded (successPolicy AnyNode, the elastic default: the first node to finish ends the "
        "job), before node(s) 0: stopping the rest"
    ]
