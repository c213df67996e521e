"""What a pod carries for Kueue's pod-group integration (pure; docs/scheduling.md).

All pods of a job, across gang restarts, form one pod group named like the job: Kueue makes one Workload
for it, admits it when its ClusterQueue has quota for `nodes` pods, and holds every pod behind its
scheduling gate until then. One group per job (not per attempt) keeps the admission through a gang
restart, as a Kubernetes Job keeps its quota while its pods are replaced; the new attempt's pods join the
admitted group as replacements. Kueue's group shape ignores env, so every rank fits one pod set.

The Workload's priority (`scheduling.workloadPriorityClass`) and its PodSet's topology request
(`scheduling.topology`) are read by Kueue from the group's pods too, so they are rendered here, on every
pod. Like the other fields torchjob owns, they win over the same keys in `spec.template.metadata`.
"""

from __future__ import annotations

from torchjob_core import constants
from torchjob_core.render import meta
from torchjob_core.spec import TrainingJob


def pod_group_labels(job: TrainingJob) -> dict[str, str]:
    """The queue name, the pod-group name and the WorkloadPriorityClass; none without `scheduling.queue`."""
    scheduling = job.spec.scheduling
    if not scheduling.queue:
        return {}
    labels = {
        constants.LABEL_KUEUE_QUEUE: scheduling.queue,
        constants.LABEL_KUEUE_POD_GROUP: meta.podgroup_name(job),
    }
    if scheduling.workload_priority_class:
        labels[constants.LABEL_KUEUE_PRIORITY_CLASS] = scheduling.workload_priority_class
    return labels


def pod_group_annotations(job: TrainingJob, base: dict[str, str]) -> dict[str, str]:
    """`base` (the template's annotations) plus the group's total count, the pods Kueue waits for before it
    creates the Workload, and the topology request. Kueue rejects a pod with more than one topology
    request, so with `scheduling.topology` set the template's own (required, preferred or unconstrained)
    is dropped."""
    scheduling = job.spec.scheduling
    if not scheduling.queue:
        return dict(base)
    out = {
        k: v
        for k, v in base.items()
        if scheduling.topology is None or k not in constants.KUEUE_TOPOLOGY_ANNOTATIONS
    }
    out[constants.ANNOTATION_KUEUE_POD_GROUP_TOTAL] = str(job.spec.nodes)
    topology = scheduling.topology
    if topology is not None and topology.required:
        out[constants.ANNOTATION_KUEUE_REQUIRED_TOPOLOGY] = topology.required
    elif topology is not None and topology.preferred:
        out[constants.ANNOTATION_KUEUE_PREFERRED_TOPOLOGY] = topology.preferred
    return out
