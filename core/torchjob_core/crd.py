"""The TrainingJob CustomResourceDefinition, built in Python: the single source of the schema.

`python -m torchjob_core.crd` prints it as YAML (manifests/crd.yaml and the chart are generated from it).
Every field has a description, so `kubectl explain trainingjob.spec.dataLoader` documents it. Cross-field
rules are CEL `x-kubernetes-validations` with a `fieldPath`, so a rejected manifest names the field; lists and
strings that rules read carry maxItems/maxLength to keep the CEL cost estimate within the apiserver's budget.
`torchjob_core.spec.load` enforces the same rules with the same field paths.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from torchjob_core import constants, quantity
from torchjob_core.spec import rules

Schema = dict[str, Any]


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", "description": description, **extra}


def _boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def _object(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _array(description: str, items: Schema, max_items: int, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items, "maxItems": max_items, **extra}


def _opaque(description: str) -> Schema:
    """An embedded core/v1 object the apiserver validates when the pod is created."""
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def _string_map(description: str, max_properties: int = rules.MAX_ENV) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string"},
        "maxProperties": max_properties,
    }


def _quantity(description: str, **extra: Any) -> Schema:
    return {
        "description": description,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": quantity.QUANTITY_PATTERN,
        "maxLength": rules.MAX_QUANTITY_LENGTH,
        "x-kubernetes-int-or-string": True,
        **extra,
    }


def _int_or_auto(description: str, minimum: int, maximum: int, default: str = "auto") -> Schema:
    return {
        "description": description,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "default": default,
        "x-kubernetes-validations": [
            _rule(
                f"type(self) == string ? self == 'auto' : (self >= {minimum} && self <= {maximum})",
                f'must be "auto" or an integer from {minimum} to {maximum}',
            )
        ],
    }


def _rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> Schema:
    out: Schema = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    if reason is not None:
        out["reason"] = reason
    return out


_POSITIVE_QUANTITY = _rule(
    "type(self) == int ? self > 0 : quantity(self).isGreaterThan(quantity('0'))", "must be greater than 0"
)


def _resources() -> Schema:
    return _object(
        "Compute resources of the trainer container on every node.",
        {
            "gpusPerNode": _integer(
                "GPUs per node, rendered as requests and limits of gpuResourceName. procsPerNode auto "
                "starts one process per GPU.",
                default=0,
                minimum=0,
                maximum=constants.MAX_GPUS_PER_NODE,
            ),
            "gpuResourceName": _string(
                "Extended resource name for GPUs, e.g. nvidia.com/gpu, nvidia.com/mig-1g.10gb or a "
                "shared-GPU resource.",
                default=constants.DEFAULT_GPU_RESOURCE,
                maxLength=rules.MAX_NAME_LENGTH,
                pattern=rules.GPU_RESOURCE_PATTERN,
            ),
            "requests": {
                "type": "object",
                "description": "Resource requests (cpu, memory, ephemeral-storage, any extended resource) as "
                "quantities. Set GPUs with gpusPerNode.",
                "additionalProperties": _quantity("A resource quantity."),
                "maxProperties": rules.MAX_RESOURCES,
            },
            "limits": {
                "type": "object",
                "description": "Resource limits as quantities. When limits.memory is set it must be at least "
                "requests.memory + the /dev/shm sizeLimit, because /dev/shm pages count against it.",
                "additionalProperties": _quantity("A resource quantity."),
                "maxProperties": rules.MAX_RESOURCES,
            },
        },
        default={},
        **{
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.limits) || !(self.gpuResourceName in self.limits)",
                    "must not set the GPU resource: set spec.resources.gpusPerNode instead",
                    ".limits",
                ),
                _rule(
                    "!has(self.requests) || !(self.gpuResourceName in self.requests)",
                    "must not set the GPU resource: set spec.resources.gpusPerNode instead",
                    ".requests",
                ),
            ]
        },
    )


def _env() -> Schema:
    reserved = ", ".join(f"'{n}'" for n in constants.RESERVED_ENV_NAMES)
    prefixes = " || ".join(f"self.name.startsWith('{p}')" for p in constants.RESERVED_ENV_PREFIXES)
    item = _object(
        "A core/v1 EnvVar.",
        {
            "name": _string(
                "Variable name.", maxLength=rules.MAX_NAME_LENGTH, pattern=rules.ENV_NAME_PATTERN
            ),
            "value": _string("Value; $(VAR) references to earlier variables (including TORCHJOB_*) expand."),
            "valueFrom": _opaque(
                "core/v1 EnvVarSource: see `kubectl explain pod.spec.containers.env.valueFrom`."
            ),
        },
        required=["name"],
        **{
            "x-kubernetes-validations": [
                _rule(f"!({prefixes} || self.name in [{reserved}])", rules.RESERVED_MSG, ".name"),
            ]
        },
    )
    return _array(
        "Environment of the trainer container (core/v1 EnvVar list). PET_*, TORCHJOB_*, MASTER_ADDR, "
        "MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK and "
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE are set by torchjob and rejected here.",
        item,
        rules.MAX_ENV,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


def _volumes() -> tuple[Schema, Schema]:
    volume = {
        **_opaque("A core/v1 Volume: see `kubectl explain pod.spec.volumes`."),
        "properties": {"name": _string("Volume name, referenced by volumeMounts.", maxLength=63)},
        "required": ["name"],
        "x-kubernetes-validations": [
            _rule(
                "!(self.name in [" + ", ".join(f"'{n}'" for n in constants.RESERVED_VOLUME_NAMES) + "])",
                rules.RESERVED_VOLUME_MSG,
                ".name",
            )
        ],
    }
    mount = {
        **_opaque("A core/v1 VolumeMount: see `kubectl explain pod.spec.containers.volumeMounts`."),
        "properties": {
            "name": _string("Name of a volume in spec.volumes.", maxLength=63),
            "mountPath": _string("Absolute path in the trainer container.", maxLength=1024),
        },
        "required": ["name", "mountPath"],
        "x-kubernetes-validations": [
            _rule(f"self.mountPath != '{constants.SHM_MOUNT_PATH}'", rules.SHM_PATH_MSG, ".mountPath")
        ],
    }
    map_list = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    return (
        _array(
            "Pod volumes (core/v1 Volume list). The /dev/shm volume is added by torchjob.",
            volume,
            rules.MAX_VOLUMES,
            **map_list,
        ),
        _array(
            "Mounts into the trainer container (core/v1 VolumeMount list).",
            mount,
            rules.MAX_VOLUMES,
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
        ),
    )


def _data_loader() -> Schema:
    return _object(
        "DataLoader settings passed to the trainer (TORCHJOB_* env) and used to size /dev/shm.",
        {
            "numWorkers": _int_or_auto(
                "DataLoader worker processes per training process: auto (from the CPU limit per process) "
                "or an integer >= 0.",
                0,
                constants.MAX_NUM_WORKERS,
            ),
            "pinMemory": _string(
                'Pin host memory for faster host-to-GPU copies: auto (on with CUDA), "true" or "false" '
                "(quote them in YAML).",
                enum=list(constants.PIN_MEMORY_VALUES),
                default="auto",
            ),
            "persistentWorkers": _boolean(
                "Keep workers alive across epochs (saves start-up time).", default=True
            ),
            "prefetchFactor": _integer(
                "Batches each worker loads ahead.",
                default=constants.DEFAULT_PREFETCH_FACTOR,
                minimum=1,
                maximum=constants.MAX_PREFETCH_FACTOR,
            ),
            "batchBytesHint": _quantity(
                "Bytes of one batch of one process, used only to size /dev/shm.",
                default=constants.DEFAULT_BATCH_BYTES_HINT,
                **{"x-kubernetes-validations": [_POSITIVE_QUANTITY]},
            ),
        },
        default={},
    )


def _shared_memory() -> Schema:
    return _object(
        "/dev/shm, always mounted as a Memory emptyDir (the container runtime default is 64 MB).",
        {
            "sizeLimit": _quantity(
                "Override of the /dev/shm size. Default: max(256Mi, 2 x procsPerNode x workers x "
                "prefetchFactor x batchBytesHint) rounded up to Mi, where workers is numWorkers, or with "
                "numWorkers auto the CPU limit (else request) per process, or 4 when no CPU is set. "
                "/dev/shm pages count against the memory limit: when limits.memory is set it must be >= "
                "requests.memory + sizeLimit, otherwise the job is rejected (the operator never raises "
                "your limit).",
                **{"x-kubernetes-validations": [_POSITIVE_QUANTITY]},
            )
        },
        default={},
    )


def _elastic() -> Schema:
    return _object(
        "Elastic training (torchrun --nnodes MIN:MAX, c10d rendezvous). Absent: a fixed number of nodes, "
        "which never waits the 30 s rendezvous last call.",
        {
            "minNodes": _integer(
                "Fewest nodes to train with.",
                default=constants.DEFAULT_ELASTIC_MIN_NODES,
                minimum=1,
                maximum=constants.MAX_NODES,
            ),
            "maxNodes": _integer("Most nodes to train with.", minimum=1, maximum=constants.MAX_NODES),
            "maxRestarts": _integer(
                "torchrun --max-restarts: in-pod restarts of the worker group.",
                default=constants.DEFAULT_ELASTIC_MAX_RESTARTS,
                minimum=0,
                maximum=constants.MAX_ELASTIC_RESTARTS,
            ),
        },
        required=["maxNodes"],
    )


def _exit_codes(description: str, default: list[int] | None = None) -> Schema:
    extra: Schema = {"x-kubernetes-list-type": "set"}
    if default is not None:
        extra["default"] = default
    return _array(
        description, {"type": "integer", "minimum": 1, "maximum": 255}, rules.MAX_EXIT_CODES, **extra
    )


def _run_policy() -> Schema:
    return _object(
        "Failure handling, deadlines and clean-up.",
        {
            "backoffLimit": _integer(
                "Restarts (gang restarts and elastic node replacements) before the job is Failed. "
                "Restarts caused by a disruption (preemption, eviction, drain, node loss) are not counted.",
                default=constants.DEFAULT_BACKOFF_LIMIT,
                minimum=0,
                maximum=constants.MAX_BACKOFF_LIMIT,
            ),
            "backoffSeconds": _integer(
                "Base delay before a restart, doubled with each counted restart, capped at 300.",
                default=constants.DEFAULT_BACKOFF_SECONDS,
                minimum=0,
                maximum=constants.MAX_BACKOFF_SECONDS,
            ),
            "retryableExitCodes": _exit_codes(
                "Exit codes that cause a gang restart. Pods with a DisruptionTarget condition (eviction, "
                "preemption, node loss) always count as retryable.",
                list(constants.DEFAULT_RETRYABLE_EXIT_CODES),
            ),
            "permanentExitCodes": _exit_codes(
                "Exit codes that fail the job at once. Codes in neither list: 1-127 permanent, "
                "128-255 retryable."
            ),
            "activeDeadlineSeconds": _integer(
                "Running-time limit; then Failed with reason DeadlineExceeded.", minimum=1
            ),
            "startupDeadlineSeconds": _integer(
                "Time allowed until all ranks run; then Failed with reason StartupDeadlineExceeded.",
                minimum=1,
            ),
            "ttlSecondsAfterFinished": _integer(
                "Delete the TrainingJob (and by owner references its pods) this long after it finished. "
                "Pods of failed attempts and their logs are kept until then.",
                minimum=0,
            ),
            "cleanPodPolicy": _string(
                "Pods deleted when the job finishes: None, Running (still-running pods only; failed pods "
                "keep their logs) or All.",
                enum=list(constants.CLEAN_POD_POLICIES),
                default=constants.DEFAULT_CLEAN_POD_POLICY,
            ),
            "suspend": _boolean("true deletes the pods and keeps the status; false resumes.", default=False),
        },
        default={},
        **{
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.permanentExitCodes) || !has(self.retryableExitCodes) || "
                    "!self.permanentExitCodes.exists(c, c in self.retryableExitCodes)",
                    rules.EXIT_OVERLAP_MSG,
                    ".permanentExitCodes",
                )
            ]
        },
    )


def _scheduling() -> Schema:
    return _object(
        "Gang scheduling and queueing.",
        {
            "gang": _boolean(
                "Create a PodGroup so that all pods (minNodes when elastic) are placed together; its "
                "minResources are their requests.",
                default=False,
            ),
            "gangScheduler": _string(
                "PodGroup flavour when gang is true: volcano (default; also sets "
                "schedulerName volcano) or coscheduling (scheduler-plugins).",
                enum=list(constants.GANG_SCHEDULERS),
            ),
            "queue": _string(
                "Kueue LocalQueue name, set as the label kueue.x-k8s.io/queue-name on pods.",
                maxLength=63,
                pattern=rules.LABEL_VALUE_PATTERN,
            ),
        },
        default={},
        **{
            "x-kubernetes-validations": [
                _rule("!has(self.gangScheduler) || self.gang", rules.GANG_SCHEDULER_MSG, ".gangScheduler")
            ]
        },
    )


def _template() -> Schema:
    container = {
        **_opaque("A core/v1 Container. The one named trainer is merged under torchjob's fields."),
        "properties": {
            "name": _string("Container name.", maxLength=63),
            "image": _string("Container image; for trainer, used when spec.image is empty.", maxLength=4096),
        },
        "required": ["name"],
    }
    return _object(
        "Escape hatch: a core/v1 PodTemplateSpec merged under the fields above (torchjob's fields win; its "
        "secure defaults such as runAsUser may be overridden here).",
        {
            "metadata": _object(
                "Labels and annotations copied to every pod.",
                {"labels": _string_map("Pod labels."), "annotations": _string_map("Pod annotations.")},
                **{"x-kubernetes-preserve-unknown-fields": True},
            ),
            "spec": {
                **_opaque("core/v1 PodSpec: see `kubectl explain pod.spec`."),
                "properties": {
                    "containers": _array(
                        "Containers; a container named trainer supplies defaults for the trainer.",
                        container,
                        rules.MAX_TEMPLATE_CONTAINERS,
                    )
                },
            },
        },
    )


def spec_schema() -> Schema:
    volumes, mounts = _volumes()
    properties: dict[str, Schema] = {
        "image": _string(
            "Trainer image. Required unless template.spec.containers[name=trainer].image is set.",
            minLength=1,
            maxLength=4096,
        ),
        "managedBy": _string(
            f"Controller that reconciles this job: {constants.CONTROLLER_NAME} (the default) or another one, "
            "such as kueue.x-k8s.io/multikueue, in which case this operator creates nothing and writes no "
            "status for it. Immutable.",
            pattern=rules.MANAGED_BY_PATTERN,
            maxLength=rules.MAX_MANAGED_BY_LENGTH,
            **{"x-kubernetes-validations": [_rule("self == oldSelf", rules.MANAGED_BY_IMMUTABLE_MSG)]},
        ),
        "imagePullPolicy": _string(
            "Always, IfNotPresent or Never.", enum=list(constants.IMAGE_PULL_POLICIES)
        ),
        "command": _array(
            "What torchrun starts in each process (an executable on PATH).",
            {"type": "string"},
            rules.MAX_ARGS,
            default=list(constants.DEFAULT_COMMAND),
            minItems=1,
        ),
        "args": _array("Arguments of the command.", {"type": "string"}, rules.MAX_ARGS),
        "launcher": _string(
            "torchjob (torchjob-launch: runs torchrun and exits with the failing worker's exit "
            "code) or torchrun (plain torchrun --no-python, for images without torchjob).",
            enum=list(constants.LAUNCHERS),
            default="torchjob",
        ),
        "nodes": _integer(
            "Pods, one torchrun agent each.",
            default=constants.DEFAULT_NODES,
            minimum=1,
            maximum=constants.MAX_NODES,
        ),
        "procsPerNode": _int_or_auto(
            "Processes per node: auto (one per GPU, else 1) or an integer.", 1, constants.MAX_PROCS_PER_NODE
        ),
        "backend": _string(
            "Process-group backend: auto (nccl with GPUs, else gloo), nccl or gloo.",
            enum=list(constants.BACKENDS),
            default="auto",
        ),
        "resources": _resources(),
        "env": _env(),
        "envFrom": _array(
            "core/v1 EnvFromSource list for the trainer container.",
            _opaque("A core/v1 EnvFromSource."),
            rules.MAX_ENV,
        ),
        "volumes": volumes,
        "volumeMounts": mounts,
        "nodeSelector": _string_map("Node labels the pods must match."),
        "tolerations": _array("core/v1 Toleration list.", _opaque("A core/v1 Toleration."), rules.MAX_ENV),
        "affinity": _opaque("core/v1 Affinity: see `kubectl explain pod.spec.affinity`."),
        "priorityClassName": _string(
            "PriorityClass of the pods (and the Volcano PodGroup).", maxLength=rules.MAX_NAME_LENGTH
        ),
        "schedulerName": _string(
            "Scheduler for the pods (default: volcano with a Volcano gang, else the cluster default).",
            maxLength=rules.MAX_NAME_LENGTH,
        ),
        "serviceAccountName": _string("ServiceAccount of the pods.", maxLength=rules.MAX_NAME_LENGTH),
        "automountServiceAccountToken": _boolean(
            "Mount an API token into the pods (off: trainers need none).", default=False
        ),
        "debug": _boolean(
            "Distributed debugging presets: TORCH_DISTRIBUTED_DEBUG=INFO, TORCH_CPP_LOG_LEVEL=INFO, "
            "TORCH_SHOW_CPP_STACKTRACES=1, LOGLEVEL=INFO, and with nccl NCCL_DEBUG=INFO, "
            "NCCL_DEBUG_SUBSYS=INIT,NET and TORCH_NCCL_DESYNC_DEBUG=1. An env entry of the same name wins.",
            default=False,
        ),
        "networkInterface": _string(
            "Network interface(s) for collectives, e.g. eth0 or eth0,eth1: sets NCCL_SOCKET_IFNAME and "
            "GLOO_SOCKET_IFNAME (an env entry of the same name wins).",
            pattern=rules.NETWORK_INTERFACE_PATTERN,
            maxLength=rules.MAX_NETWORK_INTERFACE_LENGTH,
        ),
        "dataLoader": _data_loader(),
        "sharedMemory": _shared_memory(),
        "checkpoint": _object(
            "Checkpointing by rank 0.",
            {
                "dir": _string(
                    "Directory for checkpoints (TORCHJOB_CHECKPOINT_DIR). Without a volumeMount here "
                    "torchjob mounts an emptyDir (kept across in-pod restarts only); mount a "
                    "PersistentVolumeClaim to keep checkpoints across gang restarts.",
                    default=constants.DEFAULT_CHECKPOINT_DIR,
                    pattern=rules.ABS_PATH_PATTERN,
                    maxLength=1024,
                )
            },
            default={},
        ),
        "metrics": _object(
            "Per-rank Prometheus endpoints.",
            {
                "port": _integer(
                    "Base port: local rank r serves on port + r (container ports metrics-<r>). 0 disables.",
                    default=constants.DEFAULT_METRICS_PORT,
                    minimum=0,
                    maximum=65535,
                )
            },
            default={},
        ),
        "elastic": _elastic(),
        "runPolicy": _run_policy(),
        "scheduling": _scheduling(),
        "template": _template(),
    }
    return _object(
        "Desired state of a distributed PyTorch training job.",
        properties,
        **{
            "x-kubernetes-validations": [
                _rule(
                    "has(self.image) || (has(self.template) && has(self.template.spec) && "
                    "has(self.template.spec.containers) && self.template.spec.containers.exists(c, "
                    "c.name == 'trainer' && has(c.image) && c.image != ''))",
                    rules.IMAGE_MSG,
                    ".image",
                    "FieldValueRequired",
                ),
                _rule(
                    "!has(self.elastic) || self.elastic.minNodes <= self.nodes",
                    rules.MIN_NODES_MSG,
                    ".elastic.minNodes",
                ),
                _rule(
                    "!has(self.elastic) || self.nodes <= self.elastic.maxNodes",
                    rules.MAX_NODES_MSG,
                    ".elastic.maxNodes",
                ),
                _rule("self.backend != 'nccl' || self.resources.gpusPerNode > 0", rules.NCCL_MSG, ".backend"),
                _rule(
                    "has(self.managedBy) == has(oldSelf.managedBy)",
                    rules.MANAGED_BY_IMMUTABLE_MSG,
                    ".managedBy",
                ),
                _rule(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
                    "self.volumes.exists(v, v.name == m.name))",
                    rules.MOUNT_MSG,
                    ".volumeMounts",
                ),
            ]
        },
    )


def status_schema() -> Schema:
    condition = _object(
        "One condition of the job.",
        {
            "type": _string(
                "Created, Pending, Running, Restarting, Succeeded, Failed or Suspended.", maxLength=64
            ),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _string(
                "CamelCase reason (e.g. Unschedulable, ImagePullBackOff, BackoffLimitExceeded).",
                maxLength=1024,
            ),
            "message": _string("Human-readable detail.", maxLength=32768),
            "lastTransitionTime": _string("When status last changed.", format="date-time"),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "metadata.generation this condition was computed from.",
            },
        },
        required=["type", "status"],
    )
    nodes = _object(
        "Pods of the current attempt by phase.",
        {
            k: _integer(f"{k.capitalize()} pods.")
            for k in ("total", "pending", "running", "succeeded", "failed")
        },
    )
    return _object(
        "Observed state, written by the operator.",
        {
            "phase": _string(
                "Created, Pending, Running, Restarting, Succeeded, Failed or Suspended.",
                enum=list(constants.PHASES),
            ),
            "reason": _string(
                "Short CamelCase reason of the current phase (printer column).", maxLength=1024
            ),
            "message": _string("Human-readable detail of the current phase.", maxLength=32768),
            "conditions": _array(
                "Conditions, one per type.",
                condition,
                16,
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
            ),
            "attempt": _integer("Current gang attempt (pods are named ...-r<attempt>)."),
            "restartCount": _integer("Restarts so far: gang restarts plus elastic node replacements."),
            "disruptions": _integer(
                "Restarts caused by a disruption (preemption, eviction, drain, node loss); these do not "
                "count against backoffLimit."
            ),
            "nodeReplacements": _array(
                "Elastic jobs: how often each node (by index) was replaced alone in the current attempt; "
                "a replacement pod is named ...-r<attempt>-<n>.",
                _integer("Replacements of this node."),
                constants.MAX_NODES,
            ),
            "replacingNodes": _array(
                "Elastic jobs: nodes whose replacement pod has not been seen yet.",
                _integer("Node index."),
                constants.MAX_NODES,
            ),
            "nodes": nodes,
            "nodesReady": _string("running/total pods of the current attempt, e.g. 2/2 (printer column)."),
            "lastExitCode": _integer("Exit code of the latest failed trainer container.", nullable=True),
            "startTime": _string("When the operator first created pods.", format="date-time"),
            "runningTime": _string(
                "When all ranks of the current attempt were first running.", format="date-time"
            ),
            "completionTime": _string("When the job Succeeded or Failed.", format="date-time"),
            "lastRestartTime": _string(
                "When the latest gang restart or node replacement began.", format="date-time"
            ),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "metadata.generation the status was computed from.",
            },
        },
    )


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    root = _object(
        "TrainingJob runs a distributed PyTorch (torchrun) training job as a gang of pods.",
        {
            "apiVersion": _string("API version: torchjob.dev/v1alpha1."),
            "kind": _string("TrainingJob."),
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": constants.MAX_JOB_NAME_LENGTH,
                        "pattern": constants.DNS_LABEL_PATTERN,
                    }
                },
            },
            "spec": spec_schema(),
            "status": status_schema(),
        },
        required=["spec"],
    )
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Job phase."},
        {
            "name": "Nodes",
            "type": "string",
            "jsonPath": ".status.nodesReady",
            "description": "Running/total pods of the current attempt.",
        },
        {
            "name": "Restarts",
            "type": "integer",
            "jsonPath": ".status.restartCount",
            "description": "Gang restarts.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": ".status.reason",
            "description": "Why the job is here.",
        },
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": constants.CRD_NAME,
            "labels": {constants.LABEL_APP_NAME: constants.APP_NAME},
        },
        "spec": {
            "group": constants.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": constants.KIND,
                "listKind": constants.LIST_KIND,
                "plural": constants.PLURAL,
                "singular": constants.SINGULAR,
                "shortNames": [constants.SHORT_NAME],
                "categories": [constants.CATEGORY],
            },
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def to_yaml() -> str:
    header = "# Generated by `python -m torchjob_core.crd` (core/torchjob_core/crd.py). Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(to_yaml())
