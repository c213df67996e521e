"""Condition/Event reasons paired with their message templates, in one place.

`Reason.X.format(...)` returns `(reason, message)`; the reason is the CamelCase constant that appears in
conditions, `status.reason`, Events and the printer column. `warning` makes its Event a Warning; `quiet`
marks a Pending reason that blocks nothing (the job is merely on its way), so it raises no Warning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torchjob_core import constants

_RETRY = f"{constants.BLOCKED_RETRY_SECONDS:g}s"  # how often a blocked job tries again, in its messages


@dataclasses.dataclass(frozen=True)
class Reason:
    reason: str
    template: str
    warning: bool = False
    quiet: bool = False

    def format(self, **fields: Any) -> tuple[str, str]:
        return self.reason, self.template.format(**fields)


PODS_CREATED = Reason("PodsCreated", "Created {count} pods for attempt {attempt}.", quiet=True)
PODS_PENDING = Reason("PodsPending", "{pending}/{total} pods are not running yet.", quiet=True)
KUEUE_QUEUED = Reason(
    "QueuedByKueue",
    "Kueue holds the pods until the ClusterQueue behind LocalQueue {queue} has quota for the whole job.",
    quiet=True,
)
POD_BLOCKED = Reason("", "Pod {pod}: {message}")  # reason comes from the pod (Unschedulable, ...)
ALL_RUNNING = Reason("AllRanksRunning", "All {total} nodes are running.")
RETRYABLE_EXIT = Reason(
    "RetryableExitCode", "Pod {pod} failed ({why}); gang restart in {delay:g}s ({budget}).", warning=True
)
DISRUPTED = Reason(
    "PodDisrupted", "Pod {pod} was disrupted ({why}); gang restart in {delay:g}s ({budget}).", warning=True
)
NODE_REPLACED = Reason(
    "NodeReplaced",
    "Pod {pod} failed ({why}); elastic: training goes on without node {nodes}, replaced alone in "
    "{delay:g}s ({budget}).",
    warning=True,
)
# success_policy.Success.reason_message fills these: {policy} is the successPolicy in effect (and whether
# it is the default), {who} the pod (locally: the node) whose success ended the job.
SUCCEEDED = Reason("JobSucceeded", "All {total} nodes succeeded (successPolicy {policy}).")
NODE_SUCCEEDED = Reason(
    "JobSucceeded", "{who} succeeded (successPolicy {policy}: {rule}), before node(s) {left}."
)
PERMANENT_EXIT = Reason("PermanentExitCode", "Pod {pod} exited with permanent code {code}.", warning=True)
CHECKPOINT_WRITE_FAILED = Reason(
    "CheckpointWriteFailed",
    "Pod {pod} exited with code {code}: {message} Not retried: a restart writes into the same directory.",
    warning=True,
)
RENDEZVOUS_UNREACHABLE = Reason(
    "RendezvousUnreachable",
    "Pod {pod} exited with code {code}: {message} Not retried: node 0's pod is what to fix (list the code "
    "in spec.runPolicy.retryableExitCodes to restart instead).",
    warning=True,
)
BACKOFF_LIMIT = Reason(
    "BackoffLimitExceeded",
    "Pod {pod} failed ({why}) after {count} counted restarts (backoffLimit {limit}; disruptions are not "
    "counted).",
    warning=True,
)
DEADLINE = Reason(
    "DeadlineExceeded", "The job ran longer than activeDeadlineSeconds ({seconds}s).", warning=True
)
STARTUP_DEADLINE = Reason(
    "StartupDeadlineExceeded",
    "Not all ranks were running within startupDeadlineSeconds ({seconds}s); last: {detail}",
    warning=True,
)
SUSPENDED = Reason("JobSuspended", "spec.runPolicy.suspend is true: pods deleted, status kept.")
RESUMED = Reason(
    "JobResumed", "spec.runPolicy.suspend is false: created {count} pods for attempt {attempt}.", quiet=True
)
GANG_SCHEDULER_MISSING = Reason(
    "GangSchedulerMissing",
    f"No pods created: gang scheduling is on but {{error}}; retrying every {_RETRY}.",
    warning=True,
)
DEVICE_CLAIMS_MISSING = Reason(
    "DeviceClaimsUnavailable",
    f"No pods created: spec.resources.gpuDeviceClassName is set but {{error}}; retrying every {_RETRY}.",
    warning=True,
)
INVALID_SPEC = Reason("InvalidSpec", "{error}", warning=True)
# The reason names the cause (QuotaExceeded, LimitRange, PodSecurity, InvalidPodTemplate, ...). No delay in
# the message: a retry that fails the same way then writes nothing.
POD_REJECTED = Reason("", "The API server rejected pod {pod} ({code}): {message}; retrying with backoff.")
CHECKPOINTS_IN_EMPTYDIR = Reason(
    "CheckpointsInEmptyDir",
    "Checkpoints go to {where} and are lost when a pod is replaced (gang restart, preemption, node loss): "
    "set spec.checkpoint.storage or mount a volume there.",
    warning=True,
)
CHECKPOINTS_PERSISTENT = Reason("CheckpointsPersistent", "Checkpoints go to {where}.")

# status.lastFailure.reason values the operator names itself (the others are the pod's own: OOMKilled, ...).
CONTAINER_ERROR = "Error"  # a failed pod without a reason: the kubelet's own word for a nonzero exit
POD_DELETED = "PodDeleted"  # deleted while it ran, by someone else
POD_VANISHED = "PodVanished"  # gone from the API while the job ran (its node was deleted)
DISRUPTION_TARGET = "DisruptionTarget"  # the pod condition a disruption sets, when the pod names no reason

# The trainer's own exit codes, each with the reason that names its cause (the pod says only "Error"); the
# pod's termination message fills `{message}`.
TRAINER_EXITS: dict[int, tuple[Reason, str]] = {
    constants.EXIT_CHECKPOINT_WRITE_FAILED: (
        CHECKPOINT_WRITE_FAILED,
        "the trainer could not write a checkpoint.",
    ),
    constants.EXIT_RENDEZVOUS_UNREACHABLE: (
        RENDEZVOUS_UNREACHABLE,
        "torchjob-launch could not reach node 0's rendezvous store.",
    ),
}

ALL: tuple[Reason, ...] = tuple(v for v in tuple(globals().values()) if isinstance(v, Reason))
WARNING_REASONS = frozenset(r.reason for r in ALL if r.warning)
QUIET_PENDING_REASONS = frozenset(r.reason for r in ALL if r.quiet)
