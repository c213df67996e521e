"""What the operator needs to know about one pod, read from its API body.

Pure: the Kopf index stores these small records, not whole pod bodies, and `reconcile.decide` reads
only them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torchjob_core import constants, reasons

# Container waiting reasons that block a pod from running; anything else is ordinary start-up.
BLOCKING_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)
# kube-scheduler's GangScheduling plugin says this of a gang member that would fit but whose peers do not
# (yet); its peers' own messages name the shortage.
GANG_WAIT_MESSAGE = "waiting for minCount pods from a gang"
# Pod-level reasons that mean the node, not the program, ended the pod.
DISRUPTION_REASONS = frozenset(
    {"Evicted", "NodeLost", "Preempting", "Shutdown", "Terminated", "UnexpectedAdmissionError"}
)


@dataclasses.dataclass(frozen=True)
class PodObs:
    """One pod of a TrainingJob as last seen through the watch."""

    name: str
    job: str
    index: int
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool = False
    exit_code: int | None = None
    disrupted: bool = False  # DisruptionTarget condition, or evicted / node lost
    reason: str = ""  # why it is not running yet, or why it ended
    message: str = ""
    created: str = ""
    replacement: int = 0  # elastic: how many times this node was replaced within the attempt
    node: str = ""  # spec.nodeName
    finished: str = ""  # the trainer container's terminated.finishedAt
    ip: str = ""  # status.podIP: where the operator reads rank 0's progress

    @property
    def waits_for_gang(self) -> bool:
        """Held back only by its gang (Kubernetes' gang scheduling), not by a shortage of its own."""
        return self.phase == "Pending" and GANG_WAIT_MESSAGE in self.message

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        """Pending or Running and not on its way out."""
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting


def _int_label(labels: Mapping[str, Any], key: str) -> int:
    try:
        return int(labels.get(key, "-1"))
    except (TypeError, ValueError):
        return -1


def _trainer_status(statuses: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    for cs in statuses:
        if cs.get("name") == constants.CONTAINER_NAME:
            return cs
    return statuses[0] if statuses else {}


def observe_pod(pod: Mapping[str, Any]) -> PodObs:
    """Reduce a pod body to a PodObs."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    conditions = status.get("conditions") or []
    trainer = _trainer_status(list(status.get("containerStatuses") or []))
    state = trainer.get("state") or {}

    exit_code: int | None = None
    terminated = state.get("terminated")
    if terminated is not None and terminated.get("exitCode") is not None:
        exit_code = int(terminated["exitCode"])

    disrupted = str(status.get("reason") or "") in DISRUPTION_REASONS or any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions
    )
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if phase == "Pending":
        reason, message = _pending_reason(conditions, state)
        if _kueue_gated(pod):
            reason, message = reasons.KUEUE_QUEUED.format(queue=labels.get(constants.LABEL_KUEUE_QUEUE, ""))
    if stopped := _kueue_stopped(conditions):
        # Kueue stops an evicted workload's pods (preemption) by this condition, then deletes them.
        disrupted, reason, message = True, str(stopped.get("reason") or ""), str(stopped.get("message") or "")
    elif terminated is not None and not reason:
        reason = str(terminated.get("reason") or "")
        message = str(terminated.get("message") or "")
    return PodObs(
        name=str(meta.get("name", "")),
        job=str(labels.get(constants.LABEL_JOB_NAME, "")),
        index=_int_label(labels, constants.LABEL_NODE_INDEX),
        attempt=_int_label(labels, constants.LABEL_ATTEMPT),
        phase=phase,
        deleting=meta.get("deletionTimestamp") is not None,
        exit_code=exit_code,
        disrupted=disrupted,
        reason=reason,
        message=message,
        created=str(meta.get("creationTimestamp") or ""),
        replacement=max(_int_label(labels, constants.LABEL_REPLACEMENT), 0),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        finished=str((terminated or {}).get("finishedAt") or ""),
        ip=str(status.get("podIP") or ""),
    )


def _kueue_gated(pod: Mapping[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == constants.KUEUE_ADMISSION_GATE for g in gates)


def _kueue_stopped(conditions: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for cond in conditions:
        if cond.get("type") == constants.KUEUE_TERMINATION_CONDITION and cond.get("status") == "True":
            return cond
    return None


def _pending_reason(conditions: list[Mapping[str, Any]], state: Mapping[str, Any]) -> tuple[str, str]:
    """The blocking reason of a Pending pod: a scheduling failure, a container waiting reason, or ''."""
    for cond in conditions:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "")
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in BLOCKING_WAITING_REASONS:
        return str(waiting["reason"]), str(waiting.get("message") or "")
    return "", ""
