"""The root cause of a failed attempt as `status.lastFailure` (pure), like JobSet's first failed job.

When ranks fail together, the rank that failed first is usually the cause and its peers' failures (a
collective that lost its partner exits 1) the effect; a disruption explains everything after it. So the
record names the disrupted pod if there is one, else the failed pod whose trainer container ended first,
else a pod deleted by someone else or one that vanished with its node.
"""

from __future__ import annotations

from typing import Any, Protocol

from torchjob_core import failure_policy, reasons
from torchjob_core.render import meta
from torchjob_core.spec import TrainingJob

from torchjob_operator.observe import PodObs


class Vanished(Protocol):
    """The key of a pod that disappeared (`reconcile.PodKey`): named as the operator created it."""

    @property
    def node(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def replacement(self) -> int: ...


def _ranks(job: TrainingJob, index: int) -> str | None:
    """Global ranks of node `index` in a fixed-size job (torchrun: node_rank * nproc + local_rank)."""
    if job.spec.elastic is not None or index < 0:
        return None  # elastic ranks are assigned at each rendezvous
    first = index * job.nproc_per_node
    last = first + job.nproc_per_node - 1
    return str(first) if first == last else f"{first}-{last}"


def _reason(pod: PodObs) -> str:
    # The trainer's own code says more than the container's "Error"; its message (the termination
    # log) names the cause (the checkpoint directory, the rendezvous endpoint).
    known = failure_policy.trainer_exit_reason(pod.exit_code)
    if not pod.disrupted and known is not None:
        return known[0].reason
    if pod.reason:
        return pod.reason
    if pod.phase == "Failed":
        return reasons.CONTAINER_ERROR
    return reasons.POD_DELETED


def record(job: TrainingJob, root: PodObs | Vanished, attempt: int) -> dict[str, Any]:
    """status.lastFailure for the pod (or the vanished one, by its key) that ended `attempt`."""
    if not isinstance(root, PodObs):
        name = meta.pod_name(job, root.node, root.attempt, root.replacement)
        out: dict[str, Any] = {"pod": name, "nodeIndex": root.node, "reason": reasons.POD_VANISHED}
        out["summary"] = f"{name}: vanished (its node was deleted?)"
    else:
        out = {"pod": root.name, "nodeIndex": root.index, "reason": _reason(root), "exitCode": root.exit_code}
        if root.node:
            out["node"] = root.node
        if root.message:
            out["message"] = root.message[:4096]
        if root.finished:
            out["finishedAt"] = root.finished
        where = f" on {root.node}" if root.node else ""
        code = "" if root.exit_code is None else f" (exit {root.exit_code})"
        out["summary"] = f"{root.name}{where}: {out['reason']}{code}"
    out["attempt"] = attempt
    ranks = _ranks(job, int(out["nodeIndex"]))
    if ranks is not None:
        out["ranks"] = ranks
    return out
