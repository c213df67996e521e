"""When a job has succeeded: `spec.runPolicy.successPolicy` over the nodes that Succeeded
(docs/operator.md "Policy").

Pure: no clock, no client. The operator (`reconcile`) and the CLI's local supervisor (`localrun`) both
ask `after_success`, so a local run ends exactly when the cluster would.

- `AllNodes`: every node succeeded (the default of a fixed-size job).
- `Node0`: node 0 succeeded, Kubeflow's "Master succeeded". torchrun's ranks finish together, so the
  nodes still running then (a sidecar that never stops, a process stuck in teardown) are only in the
  way; they go as at any finish (cleanPodPolicy; locally they are stopped).
- `AnyNode`: the first node to succeed (the default of an elastic job: torchrun ends every agent once
  the worker group is done, so one agent's success is the group's).

Success is checked before failures: once the policy holds, the training is done, and a node that
failed meanwhile (crashing in teardown) restarts nothing; its Failed pod stays for its logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

from torchjob_core import constants, reasons
from torchjob_core.spec import TrainingJob

ALL_NODES, NODE_0, ANY_NODE = constants.SUCCESS_POLICIES

_RULES = {
    ALL_NODES: "every node finishing ends the job",
    NODE_0: "node 0 finishing ends the job",
    ANY_NODE: "the first node to finish ends the job",
}


@dataclasses.dataclass(frozen=True)
class SuccessPolicy:
    """`spec.runPolicy.successPolicy` as written (None: the default of the job's kind) and whether the job
    is elastic."""

    written: str | None = None
    elastic: bool = False

    @classmethod
    def of(cls, job: TrainingJob) -> SuccessPolicy:
        return cls(job.spec.run_policy.success_policy, job.spec.elastic is not None)

    @property
    def name(self) -> str:
        """The policy in effect: as written, else AllNodes (fixed-size) or AnyNode (elastic)."""
        if self.written is not None:
            return self.written
        return ANY_NODE if self.elastic else ALL_NODES

    @property
    def label(self) -> str:
        """The policy as messages name it, saying when it is the default."""
        if self.written is not None:
            return self.name
        return f"{self.name}, the {'elastic ' if self.elastic else ''}default"


@dataclasses.dataclass(frozen=True)
class Success:
    """The job succeeded under `policy`: by `node`'s success (None: every node succeeded), while the
    nodes in `left` had not (yet) succeeded."""

    policy: SuccessPolicy
    total: int
    node: int | None
    left: tuple[int, ...] = ()

    def reason_message(self, who: Callable[[int], str]) -> tuple[str, str]:
        """Reason and message; `who(node)` names a node: its pod, or locally the node itself."""
        if self.node is None:
            return reasons.SUCCEEDED.format(total=self.total, policy=self.policy.label)
        return reasons.NODE_SUCCEEDED.format(
            who=who(self.node),
            policy=self.policy.label,
            rule=_RULES[self.policy.name],
            left=", ".join(map(str, self.left)),
        )


def after_success(policy: SuccessPolicy, succeeded: Collection[int], *, nodes: int) -> Success | None:
    """Whether a job of `nodes` nodes succeeded, given the node indices whose pods (processes) Succeeded
    in the current attempt; None: not yet."""
    done = sorted(set(succeeded) & set(range(nodes)))
    left = tuple(i for i in range(nodes) if i not in done)
    if not left:
        return Success(policy, nodes, None) if nodes > 0 else None
    name = policy.name
    if name == NODE_0 and 0 in done:
        return Success(policy, nodes, 0, left)
    if name == ANY_NODE and done:
        return Success(policy, nodes, done[0], left)
    return None
