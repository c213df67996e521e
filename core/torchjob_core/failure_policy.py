"""What happens after a failure: fail, restart the gang, or replace a node alone (docs/contracts.md
"Exit codes", docs/operator.md "Policy").

Pure: no clock, no client. The operator (`reconcile`) and the CLI's local supervisor (`localrun`) both
ask `after_failure`, so a local run restarts exactly when the cluster would.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Sequence

from torchjob_core import constants, reasons
from torchjob_core.spec import TrainingJob


class Verdict(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


def classify_exit(code: int, *, retryable: Collection[int], permanent: Collection[int]) -> Verdict:
    """Permanent codes win over retryable ones; a code in neither list is permanent for 1-127 (the
    program's own failure) and retryable for 128-255 (killed by a signal).

    The trainer's checkpoint-write failure (`EXIT_CHECKPOINT_WRITE_FAILED`) is one of those permanent
    codes, on purpose: the checkpoint volume outlives the pods (a claim is kept across attempts), so a
    restart writes into the same read-only, full or over-quota directory, and every retry trains the
    steps since the last checkpoint again only to lose them. A user whose volume is freed by something
    else can list the code in `retryableExitCodes`.
    """
    if code == 0:
        return Verdict.SUCCEEDED
    if code in permanent:
        return Verdict.PERMANENT
    if code in retryable:
        return Verdict.RETRYABLE
    return Verdict.RETRYABLE if code >= 128 else Verdict.PERMANENT


def trainer_exit_reason(code: int | None) -> tuple[reasons.Reason, str] | None:
    """The reason (and a message for a pod that left none) of one of the trainer's own exit codes:
    `CheckpointWriteFailed` for 73, `RendezvousUnreachable` for 69; None for any other code."""
    return None if code is None else reasons.TRAINER_EXITS.get(code)


def replaceable_alone(elastic_min_nodes: int | None, lost: Collection[int], running: Collection[int]) -> bool:
    """Whether an elastic job goes on while its `lost` nodes are replaced one by one.

    Node 0 hosts the c10d rendezvous, so it must be among the survivors, and they must number at least
    `minNodes`; a fixed-size job (`elastic_min_nodes` None) always restarts the whole gang.
    """
    if elastic_min_nodes is None or not lost or 0 in lost:
        return False
    survivors = set(running) - set(lost)
    return 0 in survivors and len(survivors) >= elastic_min_nodes


def backoff_seconds(restarts_so_far: int, base: float) -> float:
    """Delay before gang restart number `restarts_so_far` (1-based): base doubled each time, capped."""
    exponent = max(restarts_so_far - 1, 0)
    # Bound the exponent so a huge restart count cannot overflow the float.
    return float(min(base * (2 ** min(exponent, 32)), constants.MAX_BACKOFF_SECONDS))


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """The restart rules of a job: `spec.runPolicy` plus `elastic.minNodes` (None: not elastic)."""

    backoff_limit: int = 0
    backoff_seconds: float = 0.0
    retryable_exit_codes: tuple[int, ...] = constants.DEFAULT_RETRYABLE_EXIT_CODES
    permanent_exit_codes: tuple[int, ...] = ()
    elastic_min_nodes: int | None = None

    @classmethod
    def of(cls, job: TrainingJob) -> RestartPolicy:
        rp, elastic = job.spec.run_policy, job.spec.elastic
        return cls(
            backoff_limit=rp.backoff_limit,
            backoff_seconds=float(rp.backoff_seconds),
            retryable_exit_codes=tuple(rp.retryable_exit_codes),
            permanent_exit_codes=tuple(rp.permanent_exit_codes),
            elastic_min_nodes=elastic.min_nodes if elastic is not None else None,
        )

    def verdict(self, code: int) -> Verdict:
        return classify_exit(code, retryable=self.retryable_exit_codes, permanent=self.permanent_exit_codes)


@dataclasses.dataclass(frozen=True)
class Exit:
    """Node `node` exited with `code` (a signal N reads 128 + N)."""

    node: int
    code: int


@dataclasses.dataclass(frozen=True)
class Failure:
    """What went wrong in the current attempt, as the operator's pass or the local supervisor sees it."""

    exits: Sequence[Exit] = ()  # nodes that exited non-zero, in the order seen
    lost: Collection[int] = ()  # every node that is gone: those exits, plus deleted or vanished pods
    running: Collection[int] = ()  # nodes still running
    # Preemption, eviction, node loss, a pod deleted by someone else: not the job's fault. It also
    # explains its peers' exits (a rank whose collective broke exits 1), so no exit code fails the job.
    disruption: bool = False
    training: bool = True  # the gang was Running: only then is there a worker group to rejoin


class Action(enum.Enum):
    FAIL_PERMANENT = "fail: permanent exit code"
    FAIL_BACKOFF_LIMIT = "fail: backoffLimit reached"
    RESTART_GANG = "restart the gang"
    REPLACE_ALONE = "replace the lost nodes alone"


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    exit: Exit | None  # the exit to report: the first permanent one, else the first one
    counted: bool  # this restart counts against backoffLimit (a disruption does not)
    restarts: int  # counted restarts after this decision (this one included when counted)
    delay_seconds: float = 0.0  # before the new pods start (restarts only)

    @property
    def fails(self) -> bool:
        return self.action in (Action.FAIL_PERMANENT, Action.FAIL_BACKOFF_LIMIT)


def after_failure(policy: RestartPolicy, failure: Failure, *, counted_restarts: int) -> Decision:
    """The one rule for a failed attempt; `counted_restarts` are those made so far, disruptions aside.

    In order: a permanent exit code fails the job at once (never under a disruption); a retryable
    failure with backoffLimit restarts used fails it; otherwise an elastic job that can go on without
    the lost nodes replaces them alone, and any other job restarts the gang, after the backoff
    (which a disruption does not grow).
    """
    permanent = (
        []
        if failure.disruption
        else [e for e in failure.exits if policy.verdict(e.code) is Verdict.PERMANENT]
    )
    shown = permanent[0] if permanent else next(iter(failure.exits), None)
    if permanent:
        return Decision(Action.FAIL_PERMANENT, shown, counted=False, restarts=counted_restarts)
    if not failure.disruption and counted_restarts >= policy.backoff_limit:
        return Decision(Action.FAIL_BACKOFF_LIMIT, shown, counted=False, restarts=counted_restarts)
    counted = not failure.disruption
    restarts = counted_restarts + 1 if counted else counted_restarts
    delay = backoff_seconds(max(restarts, 1), policy.backoff_seconds)
    alone = failure.training and replaceable_alone(policy.elastic_min_nodes, failure.lost, failure.running)
    action = Action.REPLACE_ALONE if alone else Action.RESTART_GANG
    return Decision(action, shown, counted=counted, restarts=restarts, delay_seconds=delay)
