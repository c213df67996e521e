"""What a pod carries for Kueue's pod-group integration (pure; docs/scheduling.md).

All pods of a job, across gang restarts, form one pod group named like the job: Kueue makes one Workload
for it, admits it when its ClusterQueue has quota for `nodes` pods, and holds every pod behind its
scheduling gate until then. One group per job (not per attempt) keeps the admission through a gang
restart, as a Kubernetes Job keeps its quota while its pods are replaced; the new attempt's pods join the
admitted group as replacements. Kueue's group shape ignores env, so every rank fits one pod set.
"""

from __future__ import annotations

from torchjob_core import constants
from torchjob_core.render import meta
from torchjob_core.spec import TrainingJob


def pod_group_labels(job: TrainingJob) -> dict[str, str]:
    """The queue name and the pod-group name; nothing without `scheduling.queue`."""
    queue = job.spec.scheduling.queue
    if not queue:
        return {}
    return {constants.LABEL_KUEUE_QUEUE: queue, constants.LABEL_KUEUE_POD_GROUP: meta.podgroup_name(job)}


def pod_group_annotations(job: TrainingJob) -> dict[str, str]:
    """The group's total count: the pods Kueue waits for before it creates the Workload."""
    if not job.spec.scheduling.queue:
        return {}
    return {constants.ANNOTATION_KUEUE_POD_GROUP_TOTAL: str(job.spec.nodes)}
