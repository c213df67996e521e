"""One pod per node: the trainer container running torchrun (through the launcher) with the job's settings.

Merge order, lowest first: secure defaults, then `spec.template` (the escape hatch), then the fields the spec
and the operator own. So a template may relax a default (say, `runAsUser`), but never the name, hostname,
restart policy, command, the PET_*/TORCHJOB_* env or /dev/shm. Every other container of the template
(init containers and sidecars) gets the node's identity env through the same merge (`_merged_env`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from torchjob_core import constants
from torchjob_core.render import claims, env, kueue, meta, shm, storage
from torchjob_core.spec import TrainingJob, is_reserved_env

JSON = dict[str, Any]

POD_SECURITY_DEFAULTS: JSON = {
    "runAsNonRoot": True,
    "runAsUser": constants.RUN_AS_USER,
    "runAsGroup": constants.RUN_AS_GROUP,
    "fsGroup": constants.RUN_AS_GROUP,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_DEFAULTS: JSON = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def launcher_command(job: TrainingJob) -> list[str]:
    """`torchjob-launch -- <command>` (keeps the failing worker's exit code) or `torchrun --no-python`."""
    if job.spec.launcher == "torchrun":
        return [constants.TORCHRUN_COMMAND, "--no-python", *job.spec.command]
    return [constants.LAUNCHER_COMMAND, "--", *job.spec.command]


def pod_labels(job: TrainingJob, index: int, attempt: int, replacement: int = 0) -> dict[str, str]:
    labels = meta.job_labels(job)
    labels[constants.LABEL_NODE_INDEX] = str(index)
    labels[constants.LABEL_ATTEMPT] = str(attempt)
    if replacement:
        labels[constants.LABEL_REPLACEMENT] = str(replacement)
    scheduling = job.spec.scheduling
    labels.update(kueue.pod_group_labels(job))
    if scheduling.effective_gang_scheduler == "coscheduling":
        labels[constants.LABEL_COSCHEDULING_GROUP] = meta.podgroup_name(job)
    return labels


def _copied_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """Template annotations minus framework bookkeeping (kopf, kubectl last-applied)."""
    return {k: v for k, v in annotations.items() if not k.startswith(constants.IGNORED_ANNOTATION_PREFIXES)}


def _merge_by(key: str, base: Iterable[JSON], ours: Iterable[JSON]) -> list[JSON]:
    """Concatenate two lists of objects; an item of ours replaces a base item with the same `key`."""
    ours = list(ours)
    taken = {item.get(key) for item in ours}
    return [item for item in base if item.get(key) not in taken] + ours


def _ports(job: TrainingJob) -> list[JSON]:
    port = env.rdzv_port(job)
    ports: list[JSON] = [{"name": constants.RDZV_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    base = job.spec.metrics.port
    if base:
        ports += [
            {
                "name": f"{constants.METRICS_PORT_NAME_PREFIX}{rank}",
                "containerPort": base + rank,
                "protocol": "TCP",
            }
            for rank in range(job.nproc_per_node)
        ]
    return ports


def _resources(job: TrainingJob, base: JSON) -> JSON:
    res = job.spec.resources
    requests = {**(base.get("requests") or {}), **res.requests}
    limits = {**(base.get("limits") or {}), **res.limits}
    if res.gpus_per_node and not claims.uses_claims(job):
        # Extended resources must have requests == limits.
        requests[res.gpu_resource_name] = str(res.gpus_per_node)
        limits[res.gpu_resource_name] = str(res.gpus_per_node)
    out = {k: v for k, v in base.items() if k not in ("requests", "limits")}
    if claims.uses_claims(job):
        out["claims"] = _merge_by("name", base.get("claims") or [], claims.container_claims(job))
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _node_env(job: TrainingJob, index: int) -> list[JSON]:
    return env.node_env(job, index, master_addr=meta.master_addr(job))


def _merged_env(
    ours: list[JSON], container: JSON, *, presets: Iterable[JSON] = (), user: Iterable[JSON] = ()
) -> list[JSON]:
    """The one env merge of every container: ours, presets, the template container's env, then spec.env.

    Ours come first, so that later values may reference them as $(TORCHJOB_JOB_NAME). torchjob's names
    win in every container: a template entry with one of them, or with any reserved name (which
    admission rejects in spec.env), is dropped. Presets are defaults the template's or spec.env's entry
    of the same name replaces.
    """
    user = list(user)
    taken = {e["name"] for e in ours + user}
    template_env = [
        e for e in container.get("env") or [] if e.get("name") not in taken and not is_reserved_env(e["name"])
    ]
    overridden = taken | {e["name"] for e in template_env}
    return ours + [e for e in presets if e["name"] not in overridden] + template_env + user


def _other_container(job: TrainingJob, index: int, base: JSON) -> JSON:
    """An init container or sidecar of the template: as written, plus the node's identity env."""
    c = copy.deepcopy(base)
    c["env"] = _merged_env(_node_env(job, index), c)
    return c


def _trainer_container(job: TrainingJob, index: int, base: JSON) -> JSON:
    spec = job.spec
    c = copy.deepcopy(base)
    c["name"] = constants.CONTAINER_NAME
    if spec.image:
        c["image"] = spec.image
    if spec.image_pull_policy:
        c["imagePullPolicy"] = spec.image_pull_policy
    c["command"] = launcher_command(job)
    c.pop("args", None)
    if spec.args:
        c["args"] = list(spec.args)

    ours = env.torchrun_env(job, index, master_addr=meta.master_addr(job)) + _node_env(job, index)
    ours += env.trainer_env(job) + env.termination_log_env(c)
    c["env"] = _merged_env(ours, c, presets=env.preset_env(job), user=copy.deepcopy(list(spec.env)))
    env_from = list(c.get("envFrom") or []) + copy.deepcopy(list(spec.env_from))
    if env_from:
        c["envFrom"] = env_from

    c["resources"] = _resources(job, c.get("resources") or {})
    c["ports"] = _merge_by("containerPort", c.get("ports") or [], _ports(job))
    mounts = [*copy.deepcopy(list(spec.volume_mounts)), shm.shm_mount()]
    checkpoints = storage.checkpoint_mount(job, index)
    if checkpoints is not None:
        mounts.append(checkpoints)
    c["volumeMounts"] = _merge_by("mountPath", c.get("volumeMounts") or [], mounts)
    c["securityContext"] = {**CONTAINER_SECURITY_DEFAULTS, **(c.get("securityContext") or {})}
    return c


def _containers(job: TrainingJob, index: int, template_spec: JSON) -> list[JSON]:
    template = list(template_spec.get("containers") or [])
    containers = [
        _trainer_container(job, index, c)
        if c.get("name") == constants.CONTAINER_NAME
        else _other_container(job, index, c)
        for c in template
    ]
    if not any(c.get("name") == constants.CONTAINER_NAME for c in template):
        containers.insert(0, _trainer_container(job, index, {}))
    return containers


def _scheduler_name(job: TrainingJob, template_spec: JSON) -> str | None:
    if job.spec.scheduler_name:
        return job.spec.scheduler_name
    if job.spec.scheduling.effective_gang_scheduler == "volcano":
        return constants.VOLCANO_SCHEDULER_NAME
    name = template_spec.get("schedulerName")
    return str(name) if name else None


def render_pod(job: TrainingJob, index: int, attempt: int, replacement: int = 0) -> JSON:
    """The pod for node `index` in gang attempt `attempt`, or its `replacement`-th elastic replacement
    (a pure function of its arguments)."""
    spec = job.spec
    template = copy.deepcopy(spec.template)
    tmeta: JSON = template.get("metadata") or {}
    tspec: JSON = template.get("spec") or {}

    labels = {**(tmeta.get("labels") or {}), **pod_labels(job, index, attempt, replacement)}
    annotations = _copied_annotations(tmeta.get("annotations") or {})
    annotations["kubectl.kubernetes.io/default-container"] = constants.CONTAINER_NAME
    if spec.scheduling.effective_gang_scheduler == "volcano":
        annotations[constants.ANNOTATION_VOLCANO_GROUP] = meta.podgroup_name(job)
    annotations = kueue.pod_group_annotations(job, annotations)

    pod_spec: JSON = {
        "terminationGracePeriodSeconds": constants.DEFAULT_TERMINATION_GRACE_SECONDS,
        "enableServiceLinks": False,
        **tspec,
    }
    pod_spec["securityContext"] = {**POD_SECURITY_DEFAULTS, **(tspec.get("securityContext") or {})}
    pod_spec["hostname"] = meta.hostname(job, index)
    pod_spec["subdomain"] = meta.service_name(job)
    pod_spec["restartPolicy"] = "Never"
    pod_spec["automountServiceAccountToken"] = spec.automount_service_account_token
    pod_spec["containers"] = _containers(job, index, tspec)
    if tspec.get("initContainers"):
        pod_spec["initContainers"] = [_other_container(job, index, c) for c in tspec["initContainers"]]
    volumes = [*copy.deepcopy(list(spec.volumes)), shm.shm_volume(job)]
    checkpoints = storage.checkpoint_volume(job, index)
    if checkpoints is not None:
        volumes.append(checkpoints)
    pod_spec["volumes"] = _merge_by("name", tspec.get("volumes") or [], volumes)
    if claims.uses_claims(job):
        pod_spec["resourceClaims"] = _merge_by(
            "name", tspec.get("resourceClaims") or [], claims.pod_claims(job)
        )
    node_selector = {**(tspec.get("nodeSelector") or {}), **spec.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = list(tspec.get("tolerations") or []) + copy.deepcopy(list(spec.tolerations))
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.affinity is not None:
        pod_spec["affinity"] = copy.deepcopy(spec.affinity)
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    scheduler = _scheduler_name(job, tspec)
    if scheduler:
        pod_spec["schedulerName"] = scheduler
    if spec.scheduling.effective_gang_scheduler == "kubernetes":
        # Immutable, and may name a PodGroup that does not exist yet (the scheduler waits for it).
        pod_spec["schedulingGroup"] = {"podGroupName": meta.podgroup_name(job)}
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name

    metadata = meta.object_meta(job, meta.pod_name(job, index, attempt, replacement), labels)
    metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
