"""Run the planned nodes as local process sessions: stream output, watch exits, restart per policy.

One attempt starts every node's agent, pumps their output lines through a queue to the caller's
sink, and ends when the job's successPolicy holds (`success_policy.after_success`, the operator's own
rule: every node, node 0, or the first node to exit 0; the nodes still running are then stopped as the
operator's cleanPodPolicy deletes their pods), one fails, or the user interrupts. What a failure leads to is
`failure_policy.after_failure`, the operator's own decision: fail (permanent exit code, backoff limit),
restart the gang (after stopping the other nodes: SIGTERM to each, SIGKILL after the grace), or, for an
elastic job that can go on without the failed node, keep the others running and start that node again
alone after the backoff, as the operator replaces a lost pod. Local nodes are processes on one
machine: there are no disruptions.
"""

from __future__ import annotations

import dataclasses
import enum
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from torchjob_core.failure_policy import Action, Decision, Exit, Failure, RestartPolicy, after_failure
from torchjob_core.success_policy import Success, SuccessPolicy, after_success

from torchjob_cli import procs

POLL_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class NodePlan:
    """Everything needed to start one node's agent."""

    node_rank: int
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_file: Path


class Outcome(enum.Enum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"


@dataclasses.dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    exit_code: int  # what the CLI exits with
    restarts: int
    failed_node: int | None = None
    message: str = ""


# Sinks the caller provides: every output line, and notable run events ("restarting ...").
LineSink = Callable[[int, str], None]
EventSink = Callable[[str], None]


class _Interrupt:
    """Counts SIGINT/SIGTERM while installed; the run loop polls it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.count += 1


def _pump(node: int, stream: IO[bytes], log: IO[bytes], lines: queue.Queue[tuple[int, str]]) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        lines.put((node, raw.decode("utf-8", "replace").rstrip("\r\n")))
    stream.close()


class _Attempt:
    """The processes of one gang attempt."""

    def __init__(self, plans: Sequence[NodePlan], attempt: int) -> None:
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.nodes: dict[int, procs.Node] = {}
        self.threads: list[threading.Thread] = []
        self._logs: list[IO[bytes]] = []
        try:
            for plan in plans:
                self.start_node(plan, f"--- attempt {attempt}")
        except BaseException:
            self.stop(grace=0)
            raise

    def start_node(self, plan: NodePlan, header: str) -> None:
        """Start (or, after its failure, start again) one node's agent in a session of its own."""
        old = self.nodes.get(plan.node_rank)
        if old is not None:  # what the failed agent left behind goes with it, as a pod's containers do
            procs.kill([old])
        plan.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = plan.log_file.open("ab")
        self._logs.append(log)
        log.write(f"{header}\n".encode())
        node = procs.start(plan.argv, env=plan.env, cwd=plan.cwd)
        self.nodes[plan.node_rank] = node
        assert node.proc.stdout is not None
        t = threading.Thread(
            target=_pump, args=(plan.node_rank, node.proc.stdout, log, self.lines), daemon=True
        )
        t.start()
        self.threads.append(t)

    def drain(self, sink: LineSink) -> None:
        while True:
            try:
                node, line = self.lines.get_nowait()
            except queue.Empty:
                return
            sink(node, line)

    def stop(self, *, grace: float, abort: Callable[[], bool] = lambda: False) -> None:
        procs.stop(self.nodes.values(), grace=grace, abort=abort)

    def close(self, sink: LineSink) -> None:
        """After every node's processes are gone: flush the remaining output, close the logs."""
        for t in self.threads:
            t.join(timeout=5)
        self.drain(sink)
        for log in self._logs:
            log.close()


def run_gang(
    plans_for_attempt: Callable[[int], Sequence[NodePlan]],
    policy: RestartPolicy,
    *,
    on_line: LineSink,
    on_event: EventSink,
    grace: float = procs.GRACE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    success: SuccessPolicy | None = None,
) -> RunResult:
    """Run attempts until success, a permanent failure, the backoff limit, or an interrupt.

    `success` is the job's successPolicy (None: the default of the job's kind, elastic when `policy`
    has elastic_min_nodes).

    `plans_for_attempt(attempt)` renders the nodes afresh for each gang attempt (new rendezvous ports, so
    a restarted gang never meets a half-closed store of the last one). A node replaced alone keeps its
    attempt's plan: the survivors' rendezvous is still up. `restarts` counts both, as the operator's
    `restartCount` does.
    """
    if success is None:
        success = SuccessPolicy(elastic=policy.elastic_min_nodes is not None)
    rules = _Rules(policy, success)
    restarts = 0
    gang = 0
    with _Interrupt() as interrupt:
        while True:
            plans = {p.node_rank: p for p in plans_for_attempt(gang)}
            decision, restarts = _run_attempt(
                plans, gang, restarts, rules, interrupt, on_line=on_line, on_event=on_event, grace=grace
            )
            if interrupt.signum is not None:
                return _interrupted(interrupt, restarts)
            if isinstance(decision, Success):
                _, message = decision.reason_message(_node_name)
                return RunResult(Outcome.SUCCEEDED, 0, restarts, message=message)
            assert decision is not None
            if decision.fails:
                return _failed(policy, decision, restarts)
            restarts = decision.restarts
            gang += 1
            on_event(
                f"{_what(policy, decision.exit)}: restarting the gang in {decision.delay_seconds:g}s "
                f"(restart {restarts} of backoffLimit {policy.backoff_limit})"
            )
            _sleep_unless_interrupted(decision.delay_seconds, interrupt, sleep)
            if interrupt.signum is not None:
                return _interrupted(interrupt, restarts)


@dataclasses.dataclass(frozen=True)
class _Rules:
    """The job's two shared decisions: after a failure, and when it succeeded."""

    restart: RestartPolicy
    success: SuccessPolicy


def _node_name(node: int) -> str:
    return f"node {node}"


def _run_attempt(
    plans: Mapping[int, NodePlan],
    gang: int,
    restarts: int,
    rules: _Rules,
    interrupt: _Interrupt,
    *,
    on_line: LineSink,
    on_event: EventSink,
    grace: float,
) -> tuple[Decision | Success | None, int]:
    """Start gang attempt `gang`, watch it to its end, stop what is left; what ended it (the success, the
    failure's decision, or None: an interrupt) and the restarts counted so far."""
    attempt = _Attempt(list(plans.values()), gang)
    try:
        decision, restarts = _watch(
            attempt, plans, restarts, rules, interrupt, on_line=on_line, on_event=on_event
        )
        if interrupt.signum is not None:
            on_event("interrupted: stopping every node (Ctrl-C again to kill at once)")
            _stop_interruptible(attempt, interrupt, grace)
        else:
            attempt.stop(grace=grace)
    finally:
        attempt.stop(grace=0)
        attempt.close(on_line)
    return decision, restarts


def _watch(
    attempt: _Attempt,
    plans: Mapping[int, NodePlan],
    restarts: int,
    rules: _Rules,
    interrupt: _Interrupt,
    *,
    on_line: LineSink,
    on_event: EventSink,
) -> tuple[Decision | Success | None, int]:
    """Poll the nodes until the successPolicy holds (checked first, as the operator does: a node that
    failed meanwhile restarts nothing), an interrupt, or a failure that failure_policy does not absorb
    by replacing the lost nodes alone (those it starts again here, after the backoff)."""
    policy = rules.restart
    replacing: dict[int, float] = {}  # node -> when (monotonic clock) it starts again
    while True:
        attempt.drain(on_line)
        if interrupt.signum is not None:
            return None, restarts
        now = time.monotonic()
        for node, due in sorted(replacing.items()):
            if now >= due:
                del replacing[node]
                attempt.start_node(plans[node], f"--- node {node} replaced (restart {restarts})")
        codes = {n: node.proc.poll() for n, node in attempt.nodes.items() if n not in replacing}
        succeeded = [n for n, c in codes.items() if c == 0]
        success = after_success(rules.success, succeeded, nodes=len(plans))
        if success is not None:
            if success.left:  # the rest are stopped, as cleanPodPolicy deletes their pods
                _, message = success.reason_message(_node_name)
                on_event(f"{message.removesuffix('.')}: stopping the rest")
            return success, restarts  # a replacement still waiting is not started (AllNodes waits)
        exits = [Exit(n, _exit_code(c)) for n, c in codes.items() if c not in (None, 0)]
        if exits:
            running = [n for n, c in codes.items() if c is None]
            failure = Failure(exits=exits, lost=[e.node for e in exits], running=running)
            decision = after_failure(policy, failure, counted_restarts=restarts)
            if decision.action is not Action.REPLACE_ALONE:
                return decision, restarts
            restarts = decision.restarts
            for e in exits:
                replacing[e.node] = now + decision.delay_seconds
            on_event(
                f"{_what(policy, decision.exit)}: replacing node {', '.join(str(e.node) for e in exits)} "
                f"alone in {decision.delay_seconds:g}s (restart {restarts} of backoffLimit "
                f"{policy.backoff_limit}); node(s) {', '.join(map(str, running))} keep training"
            )
            continue
        time.sleep(POLL_SECONDS)


def _exit_code(returncode: int) -> int:
    return returncode if returncode > 0 else 128 - returncode  # Popen's -N: killed by signal N


def _what(policy: RestartPolicy, exit: Exit | None) -> str:
    assert exit is not None, "a local failure always has an exit code"
    return f"node {exit.node} exited with code {exit.code} ({policy.verdict(exit.code).value})"


def _interrupted(interrupt: _Interrupt, restarts: int) -> RunResult:
    assert interrupt.signum is not None
    return RunResult(Outcome.INTERRUPTED, 128 + interrupt.signum, restarts, message="interrupted")


def _failed(policy: RestartPolicy, decision: Decision, restarts: int) -> RunResult:
    assert decision.exit is not None
    what = _what(policy, decision.exit)
    if decision.action is Action.FAIL_PERMANENT:
        why = "not restarting (permanent)"
    else:
        why = f"backoffLimit {policy.backoff_limit} reached after {restarts} restart(s)"
    return RunResult(Outcome.FAILED, decision.exit.code, restarts, decision.exit.node, f"{what}: {why}")


def _stop_interruptible(attempt: _Attempt, interrupt: _Interrupt, grace: float) -> None:
    """SIGTERM now; SIGKILL after the grace or at the next Ctrl-C, whichever comes first."""
    seen = interrupt.count
    attempt.stop(grace=grace, abort=lambda: interrupt.count != seen)


def _sleep_unless_interrupted(delay: float, interrupt: _Interrupt, sleep: Callable[[float], None]) -> None:
    end = time.monotonic() + delay
    while interrupt.signum is None and (left := end - time.monotonic()) > 0:
        sleep(min(left, POLL_SECONDS))
