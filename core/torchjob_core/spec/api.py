"""The TrainingJob v1alpha1 API: every field of spec and status declared once.

Each declaration holds a field's type, default, bounds, pattern, description and cross-field rules (CEL
paired with its Python predicate, see `fields.Rule`). `torchjob_core.crd` generates the CRD's
openAPIV3Schema from `SPEC` and `STATUS`; `spec.load` validates manifests with `METADATA` and `SPEC`.
Lists and strings that rules read carry maxItems/maxLength to keep the apiserver's CEL cost estimate
within budget.
"""

from __future__ import annotations

from typing import Any, Final

from torchjob_core import constants, quantity
from torchjob_core.spec.fields import (
    MISSING,
    Array,
    Bool,
    Field,
    Int,
    IntOrAuto,
    Map,
    Num,
    Object,
    Quantity,
    Rule,
    Str,
    opaque,
)
from torchjob_core.spec.types import template_container

# `<dns-subdomain>/<name>`, the shape of an extended resource name.
GPU_RESOURCE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
    r"/([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
# `<domain>/<path>`, as Kueue's MultiKueue (`kueue.x-k8s.io/multikueue`) and the batch Job API expect.
MANAGED_BY_PATTERN: Final = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
)
MAX_MANAGED_BY_LENGTH: Final = 63
# A DNS subdomain: DeviceClass and PersistentVolumeClaim names.
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# One interface name or a comma-separated list: what both NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME take.
NETWORK_INTERFACE_PATTERN: Final = r"^[A-Za-z0-9_.:@-]+(,[A-Za-z0-9_.:@-]+)*$"
MAX_NETWORK_INTERFACE_LENGTH: Final = 256
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label key (what a Kueue Topology level names): an optional DNS-subdomain prefix and `/`, then a name of
# at most 63 characters; at most as long as Kueue lets a Topology level's nodeLabel be.
LABEL_KEY_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
MAX_LABEL_KEY_LENGTH: Final = 316
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
ABS_PATH_PATTERN: Final = r"^/"


def _one_of(words: tuple[str, ...], conjunction: str = "or") -> str:
    """`A, B or C` for a description that lists a vocabulary declared elsewhere."""
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


# The reserved env in words, for the messages that name it.
_RESERVED_ENV: Final = _one_of(
    (*(f"{p}*" for p in constants.RESERVED_ENV_PREFIXES), *constants.RESERVED_ENV_NAMES), "and"
)

# List and string sizes: they bound the CEL cost estimate at admission (and load enforces them too).
MAX_ENV: Final = 256
MAX_VOLUMES: Final = 128
MAX_ARGS: Final = 1024
MAX_EXIT_CODES: Final = 255
MAX_TEMPLATE_CONTAINERS: Final = 32
MAX_RESOURCES: Final = 32
MAX_NAME_LENGTH: Final = 253
MAX_STRING_LENGTH: Final = 4096

_GPU_RESOURCE_MSG: Final = "must not set the GPU resource: set spec.resources.gpusPerNode instead"
_MANAGED_BY_IMMUTABLE_MSG: Final = "managedBy is immutable: it cannot be set, changed or removed once created"


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _string_map(description: str, max_properties: int = MAX_ENV) -> Map:
    return Map(description, values=Str(), max_properties=max_properties)


def _quantity_map(description: str) -> Map:
    values = Quantity("A resource quantity.")
    return Map(description, values=values, max_properties=MAX_RESOURCES)


def _resources() -> Object:
    def gpu_not_in(key: str) -> Rule:
        return Rule(
            f"!has(self.{key}) || !(self.gpuResourceName in self.{key})",
            _GPU_RESOURCE_MSG,
            lambda r: r["gpuResourceName"] not in r.get(key, {}),
            f".{key}",
        )

    return Object(
        "Compute resources of the trainer container on every node.",
        properties={
            "gpusPerNode": Int(
                "GPUs per node, rendered as requests and limits of gpuResourceName. procsPerNode "
                "auto starts one process per GPU.",
                default=0,
                minimum=0,
                maximum=constants.MAX_GPUS_PER_NODE,
            ),
            "gpuResourceName": Str(
                "Extended resource name for GPUs, e.g. nvidia.com/gpu, nvidia.com/mig-1g.10gb or "
                "a shared-GPU resource.",
                default=constants.DEFAULT_GPU_RESOURCE,
                max_length=MAX_NAME_LENGTH,
                pattern=GPU_RESOURCE_PATTERN,
            ),
            "gpuDeviceClassName": Str(
                "Claim the gpusPerNode GPUs through Dynamic Resource Allocation instead of "
                "gpuResourceName: a ResourceClaimTemplate per job asking for exactly gpusPerNode devices "
                "of this DeviceClass (e.g. gpu.nvidia.com), one claim per pod.",
                max_length=MAX_NAME_LENGTH,
                pattern=DNS_SUBDOMAIN_PATTERN,
            ),
            "gpuMemoryFraction": Num(
                "Cap on each training process's share of its GPU's memory, in (0, 1] "
                "(torch.cuda.set_per_process_memory_fraction): leaves room for another process on a "
                "shared GPU. Needs gpusPerNode > 0.",
                minimum=0,
                maximum=1,
                # Not exclusiveMinimum: structural schemas take it as a boolean, JSON Schema as a number.
                rules=(Rule("self > 0.0", "must be greater than 0", lambda v: v > 0),),
            ),
            "requests": _quantity_map(
                "Resource requests (cpu, memory, ephemeral-storage, any extended resource) as quantities. "
                "Set GPUs with gpusPerNode."
            ),
            "limits": _quantity_map(
                "Resource limits as quantities. When limits.memory is set it must be at least "
                "requests.memory + the /dev/shm sizeLimit, because /dev/shm pages count against it."
            ),
        },
        default={},
        rules=(
            gpu_not_in("limits"),
            gpu_not_in("requests"),
            Rule(
                "!has(self.gpuMemoryFraction) || self.gpusPerNode > 0",
                "gpuMemoryFraction needs gpusPerNode > 0: it caps a process's share of its GPU",
                lambda r: "gpuMemoryFraction" not in r or r["gpusPerNode"] > 0,
                ".gpuMemoryFraction",
            ),
            Rule(
                "!has(self.gpuDeviceClassName) || self.gpusPerNode > 0",
                "gpuDeviceClassName needs gpusPerNode > 0: it is the number of devices each pod claims",
                lambda r: "gpuDeviceClassName" not in r or r["gpusPerNode"] > 0,
                ".gpuDeviceClassName",
            ),
        ),
    )


def is_reserved_env(name: str) -> bool:
    """True for env names torchjob sets itself (PET_*, TORCHJOB_*, MASTER_ADDR, RANK, ...)."""
    return name.startswith(constants.RESERVED_ENV_PREFIXES) or name in constants.RESERVED_ENV_NAMES


def _env() -> Array:
    prefixes = " || ".join(f"self.name.startsWith('{p}')" for p in constants.RESERVED_ENV_PREFIXES)
    item = Object(
        "A core/v1 EnvVar.",
        properties={
            "name": Str("Variable name.", max_length=MAX_NAME_LENGTH, pattern=ENV_NAME_PATTERN),
            "value": Str("Value; $(VAR) references to earlier variables (including TORCHJOB_*) expand."),
            "valueFrom": opaque(
                "core/v1 EnvVarSource: see `kubectl explain pod.spec.containers.env.valueFrom`."
            ),
        },
        required=("name",),
        rules=(
            Rule(
                f"!({prefixes} || self.name in [{_quoted(constants.RESERVED_ENV_NAMES)}])",
                f"is reserved: torchjob sets {_RESERVED_ENV} itself",
                lambda e: not is_reserved_env(e["name"]),
                ".name",
            ),
        ),
    )
    return Array(
        f"Environment of the trainer container (core/v1 EnvVar list). {_RESERVED_ENV} are set by "
        "torchjob and rejected here.",
        items=item,
        max_items=MAX_ENV,
        map_keys=("name",),
    )


def _volumes() -> Array:
    volume = Object(
        "A core/v1 Volume: see `kubectl explain pod.spec.volumes`.",
        properties={"name": Str("Volume name, referenced by volumeMounts.", max_length=63)},
        required=("name",),
        preserve_unknown=True,
        rules=(
            Rule(
                f"!(self.name in [{_quoted(constants.RESERVED_VOLUME_NAMES)}])",
                "is reserved for the volumes torchjob adds (dshm, torchjob-checkpoints)",
                lambda v: v["name"] not in constants.RESERVED_VOLUME_NAMES,
                ".name",
            ),
        ),
    )
    return Array(
        "Pod volumes (core/v1 Volume list). The /dev/shm volume is added by torchjob.",
        items=volume,
        max_items=MAX_VOLUMES,
        map_keys=("name",),
    )


def _volume_mounts() -> Array:
    mount = Object(
        "A core/v1 VolumeMount: see `kubectl explain pod.spec.containers.volumeMounts`.",
        properties={
            "name": Str("Name of a volume in spec.volumes.", max_length=63),
            "mountPath": Str("Absolute path in the trainer container.", max_length=1024),
        },
        required=("name", "mountPath"),
        preserve_unknown=True,
        rules=(
            Rule(
                f"self.mountPath != '{constants.SHM_MOUNT_PATH}'",
                "is reserved: torchjob mounts /dev/shm; size it with spec.sharedMemory.sizeLimit",
                lambda m: m["mountPath"] != constants.SHM_MOUNT_PATH,
                ".mountPath",
            ),
        ),
    )
    return Array(
        "Mounts into the trainer container (core/v1 VolumeMount list).",
        items=mount,
        max_items=MAX_VOLUMES,
        map_keys=("mountPath",),
    )


def _data_loader() -> Object:
    return Object(
        "DataLoader settings passed to the trainer (TORCHJOB_* env) and used to size /dev/shm.",
        properties={
            "numWorkers": IntOrAuto(
                "DataLoader worker processes per training process: auto (from the CPU limit per "
                "process) or an integer >= 0.",
                minimum=0,
                maximum=constants.MAX_NUM_WORKERS,
            ),
            "pinMemory": Str(
                'Pin host memory for faster host-to-GPU copies: auto (on with CUDA), "true" or '
                '"false" (quote them in YAML).',
                enum=constants.PIN_MEMORY_VALUES,
                default="auto",
            ),
            "persistentWorkers": Bool(
                "Keep workers alive across epochs (saves start-up time).", default=True
            ),
            "prefetchFactor": Int(
                "Batches each worker loads ahead.",
                default=constants.DEFAULT_PREFETCH_FACTOR,
                minimum=1,
                maximum=constants.MAX_PREFETCH_FACTOR,
            ),
            "autotune": Bool(
                "Before training, measure loader configs (worker counts up to 2 per CPU, with the "
                "training step running) and keep the fastest; bounded by autotuneSeconds.",
                default=False,
            ),
            "autotuneSeconds": Int(
                "Time budget of autotune: candidates left when it runs out are skipped (logged).",
                default=constants.DEFAULT_AUTOTUNE_SECONDS,
                minimum=1,
                maximum=constants.MAX_AUTOTUNE_SECONDS,
            ),
            "batchBytesHint": Quantity(
                "Bytes of one batch of one process, used only to size /dev/shm.",
                default=constants.DEFAULT_BATCH_BYTES_HINT,
                positive=True,
            ),
        },
        default={},
    )


def _shared_memory() -> Object:
    size_limit = Quantity(
        "Override of the /dev/shm size. Default: max(256Mi, (workers x prefetchFactor + 1) x "
        "batchBytesHint x procsPerNode / 80%) rounded up to Mi, the trainer's own need within the 80% of "
        "the mount it fills; "
        "workers is numWorkers, or with numWorkers auto 1.5 per CPU of the CPU limit (else request) per "
        "process, floored (none below one CPU, at most 16), or 4 when no CPU is set. /dev/shm pages count "
        "against the memory limit: when limits.memory is set it must be >= requests.memory + sizeLimit, "
        "otherwise the job is rejected (the operator never raises your limit).",
        positive=True,
    )
    return Object(
        "/dev/shm, always mounted as a Memory emptyDir (the container runtime default is 64 MB).",
        properties={"sizeLimit": size_limit},
        default={},
    )


def _checkpoint_storage() -> Object:
    claim_name = Str(
        "A PersistentVolumeClaim the user owns, mounted instead of one the operator creates.",
        max_length=MAX_NAME_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    return Object(
        "A PersistentVolumeClaim at checkpoint.dir that outlives pods. With size the operator creates one "
        "claim, <job>-checkpoints, before the first pods and keeps it across attempts; with existingClaim "
        "the pods mount that claim. With ReadWriteMany every pod mounts it; otherwise only node 0's pod "
        "(where rank 0 of a fixed-size job runs), and the other nodes keep an emptyDir.",
        properties={
            "size": Quantity("Requested storage of the claim the operator creates.", positive=True),
            "storageClassName": Str(
                "StorageClass of the created claim; absent or empty: the cluster's default class.",
                max_length=MAX_NAME_LENGTH,
            ),
            "accessModes": Array(
                "Access modes of the claim (for existingClaim: the ones it has). Only ReadWriteMany lets "
                "every pod mount it.",
                items=Str(enum=constants.CLAIM_ACCESS_MODES),
                max_items=len(constants.CLAIM_ACCESS_MODES),
                min_items=1,
                unique=True,
                default=[constants.DEFAULT_CLAIM_ACCESS_MODE],
            ),
            "existingClaim": claim_name,
            "whenJobDeleted": Str(
                "Delete: the created claim is owned by the job and deleted with it. Retain: it has no "
                "owner and stays (a new job of the same name mounts it again and resumes).",
                enum=constants.CLAIM_RETENTION_POLICIES,
                default=constants.CLAIM_RETENTION_POLICIES[0],
            ),
        },
        rules=(
            Rule(
                "has(self.size) != has(self.existingClaim)",
                "set exactly one of size (a claim the operator creates) or existingClaim",
                lambda s: ("size" in s) != ("existingClaim" in s),
            ),
        ),
    )


def _checkpoint() -> Object:
    directory = Str(
        "Directory for checkpoints (TORCHJOB_CHECKPOINT_DIR). Without storage or a volumeMount here "
        "torchjob mounts an emptyDir (kept across in-pod restarts only; the job gets the condition "
        "CheckpointsEphemeral); set storage to keep checkpoints across gang restarts.",
        default=constants.DEFAULT_CHECKPOINT_DIR,
        pattern=ABS_PATH_PATTERN,
        max_length=1024,
    )
    return Object(
        "Checkpointing by rank 0.",
        properties={"dir": directory, "storage": _checkpoint_storage()},
        default={},
    )


def _metrics() -> Object:
    port = Int(
        "Base port: local rank r serves on port + r (container ports metrics-<r>). 0 disables.",
        default=constants.DEFAULT_METRICS_PORT,
        minimum=0,
        maximum=65535,
    )
    return Object("Per-rank Prometheus endpoints.", properties={"port": port}, default={})


def _elastic() -> Object:
    return Object(
        "Elastic training (torchrun --nnodes MIN:MAX, c10d rendezvous). Absent: a fixed number "
        "of nodes, whose rendezvous never waits a last call.",
        properties={
            "minNodes": Int(
                "Fewest nodes to train with.",
                default=constants.DEFAULT_ELASTIC_MIN_NODES,
                minimum=1,
                maximum=constants.MAX_NODES,
            ),
            "maxNodes": Int("Most nodes to train with.", minimum=1, maximum=constants.MAX_NODES),
            "maxRestarts": Int(
                "torchrun --max-restarts: in-pod restarts of the worker group.",
                default=constants.DEFAULT_ELASTIC_MAX_RESTARTS,
                minimum=0,
                maximum=constants.MAX_ELASTIC_RESTARTS,
            ),
            "lastCallTimeoutSeconds": Int(
                "c10d rendezvous last_call_timeout: once minNodes have joined a rendezvous round (the "
                "start, and each re-rendezvous after a node loss), how long it waits for more nodes "
                "before it starts with those it has (maxNodes joined ends it at once). torchjob creates "
                "all spec.nodes pods together, so they join within seconds of one another; beyond "
                "spec.nodes only replacement pods come, which join at a later round anyway. Hence 5 s "
                "rather than torch's 30 s, which a job with nodes < maxNodes would wait every round.",
                default=constants.DEFAULT_ELASTIC_LAST_CALL_SECONDS,
                minimum=1,
                maximum=constants.MAX_ELASTIC_LAST_CALL_SECONDS,
            ),
            "joinTimeoutSeconds": Int(
                "c10d rendezvous join_timeout: how long a round may take to reach minNodes (last call "
                "included) before torchrun gives up and the launcher exits 1 (torch's default, 600 s).",
                default=constants.DEFAULT_ELASTIC_JOIN_TIMEOUT_SECONDS,
                minimum=1,
                maximum=constants.MAX_ELASTIC_JOIN_TIMEOUT_SECONDS,
            ),
        },
        required=("maxNodes",),
        rules=(
            Rule(
                "self.lastCallTimeoutSeconds < self.joinTimeoutSeconds",
                "lastCallTimeoutSeconds must be less than joinTimeoutSeconds: the last call is part of "
                "the join, so the join would time out before the last call ends",
                lambda e: e["lastCallTimeoutSeconds"] < e["joinTimeoutSeconds"],
                ".lastCallTimeoutSeconds",
            ),
        ),
    )


def _exit_codes(description: str, default: Any = MISSING) -> Array:
    return Array(
        description,
        items=Int(minimum=1, maximum=255, fmt=None),
        max_items=MAX_EXIT_CODES,
        unique=True,
        default=default,
    )


def _run_policy_limits() -> dict[str, Field]:
    return {
        "backoffLimit": Int(
            "Restarts (gang restarts and elastic node replacements) before the job is Failed. "
            "Restarts caused by a disruption (preemption, eviction, drain, node loss) are not counted.",
            default=constants.DEFAULT_BACKOFF_LIMIT,
            minimum=0,
            maximum=constants.MAX_BACKOFF_LIMIT,
        ),
        "backoffSeconds": Int(
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
            "Exit codes that fail the job at once. Codes in neither list: 1-127 permanent, 128-255 retryable."
        ),
    }


def _run_policy_lifecycle() -> dict[str, Field]:
    return {
        "activeDeadlineSeconds": Int(
            "Running-time limit; then Failed with reason DeadlineExceeded.", minimum=1
        ),
        "startupDeadlineSeconds": Int(
            "Time allowed until all ranks run; then Failed with reason StartupDeadlineExceeded.",
            minimum=1,
        ),
        "ttlSecondsAfterFinished": Int(
            "Delete the TrainingJob (and by owner references its pods) this long after it "
            "finished. Pods of failed attempts and their logs are kept until then.",
            minimum=0,
        ),
        "cleanPodPolicy": Str(
            "Pods deleted when the job finishes: None, Running (still-running pods only; failed "
            "pods keep their logs) or All.",
            enum=constants.CLEAN_POD_POLICIES,
            default=constants.DEFAULT_CLEAN_POD_POLICY,
        ),
        "successPolicy": Str(
            "When the job Succeeded: AllNodes (every node's pod Succeeded), Node0 (node 0's pod "
            "Succeeded, like Kubeflow's Master: torchrun's ranks finish together, so nodes still running "
            "then, e.g. a sidecar or a process stuck in teardown, are cleaned up per cleanPodPolicy) or "
            "AnyNode (the first node to succeed). Absent: AllNodes for a fixed-size job, AnyNode for an "
            "elastic one (torchrun ends every agent once the worker group is done). Once it holds, a node "
            "that failed meanwhile restarts nothing.",
            enum=constants.SUCCESS_POLICIES,
        ),
        "suspend": Bool(
            "true deletes the pods and keeps the status; false resumes. The spec outside runPolicy may "
            "change only while the job is suspended and status.phase is Suspended; the resume renders the "
            "new spec.",
            default=False,
        ),
    }


def _run_policy() -> Object:
    no_overlap = Rule(
        "!has(self.permanentExitCodes) || !has(self.retryableExitCodes) || "
        "!self.permanentExitCodes.exists(c, c in self.retryableExitCodes)",
        "an exit code must not be in both retryableExitCodes and permanentExitCodes",
        lambda p: not set(p.get("permanentExitCodes", ())) & set(p.get("retryableExitCodes", ())),
        ".permanentExitCodes",
    )
    return Object(
        "Failure handling, deadlines and clean-up.",
        properties={**_run_policy_limits(), **_run_policy_lifecycle()},
        default={},
        rules=(no_overlap,),
    )


def _topology() -> Object:
    def level(description: str) -> Str:
        return Str(description, max_length=MAX_LABEL_KEY_LENGTH, pattern=LABEL_KEY_PATTERN)

    return Object(
        "Kueue Topology-Aware Scheduling: place all pods within one domain (nodes sharing a value) of a "
        "level of the Topology that the queue's ResourceFlavor names (its spec.topologyName), such as a "
        "block, a rack or kubernetes.io/hostname. Set as the annotation "
        f"{constants.ANNOTATION_KUEUE_REQUIRED_TOPOLOGY} or {constants.ANNOTATION_KUEUE_PREFERRED_TOPOLOGY} "
        "on every pod (the template's own topology annotations are dropped). Needs queue.",
        properties={
            "required": level(
                "Node label of the level one of whose domains must hold every pod; the job stays queued "
                "until one has room."
            ),
            "preferred": level(
                "Node label of the level to try first: when no domain of it has room Kueue tries the "
                "levels above, and at the top admits the pods spread over domains."
            ),
        },
        rules=(
            Rule(
                "has(self.required) != has(self.preferred)",
                "set exactly one of required or preferred",
                lambda t: ("required" in t) != ("preferred" in t),
            ),
        ),
    )


def _needs_queue(key: str) -> Rule:
    return Rule(
        f"!has(self.{key}) || (has(self.queue) && self.queue != '')",
        f"{key} needs spec.scheduling.queue: Kueue reads it only on the pods of a job it queues",
        lambda s: key not in s or bool(s.get("queue")),
        f".{key}",
    )


def _scheduling() -> Object:
    return Object(
        "Gang scheduling and queueing.",
        properties={
            "gang": Bool(
                "Create a PodGroup so that all pods (minNodes when elastic) are placed together "
                "or not at all; volcano and coscheduling groups also get minResources (their requests).",
                default=False,
            ),
            "gangScheduler": Str(
                "PodGroup flavour when gang is true: volcano (default; also sets schedulerName "
                "volcano), coscheduling (scheduler-plugins), or kubernetes (kube-scheduler's own "
                "scheduling.k8s.io/v1alpha2 PodGroup; alpha gates GenericWorkload and GangScheduling).",
                enum=constants.GANG_SCHEDULERS,
            ),
            "queue": Str(
                "Kueue LocalQueue name, set as the label kueue.x-k8s.io/queue-name on pods.",
                max_length=63,
                pattern=LABEL_VALUE_PATTERN,
            ),
            "workloadPriorityClass": Str(
                "Kueue WorkloadPriorityClass of the job's Workload, set as the label "
                f"{constants.LABEL_KUEUE_PRIORITY_CLASS} on every pod (over a template label of that name): "
                "Kueue orders its queue and preempts by this class's value instead of the pods' "
                "PriorityClass, which priorityClassName still sets for kube-scheduler. Kueue creates no "
                "Workload while the class does not exist. Needs queue.",
                max_length=63,
                pattern=DNS_SUBDOMAIN_PATTERN,
            ),
            "topology": _topology(),
        },
        default={},
        rules=(
            Rule(
                "!has(self.gangScheduler) || self.gang",
                "gangScheduler may only be set when gang is true",
                lambda s: "gangScheduler" not in s or s["gang"],
                ".gangScheduler",
            ),
            _needs_queue("workloadPriorityClass"),
            _needs_queue("topology"),
        ),
    )


def _template() -> Object:
    container = Object(
        "A core/v1 Container. The one named trainer is merged under torchjob's fields.",
        properties={
            "name": Str("Container name.", max_length=63),
            "image": Str(
                "Container image; for trainer, used when spec.image is empty.",
                max_length=MAX_STRING_LENGTH,
            ),
        },
        required=("name",),
        preserve_unknown=True,
    )
    containers = Array(
        "Containers; a container named trainer supplies defaults for the trainer.",
        items=container,
        max_items=MAX_TEMPLATE_CONTAINERS,
    )
    metadata = opaque(
        "Labels and annotations copied to every pod.",
        labels=_string_map("Pod labels."),
        annotations=_string_map("Pod annotations."),
    )
    return Object(
        "Escape hatch: a core/v1 PodTemplateSpec merged under the fields above (torchjob's "
        "fields win; its secure defaults such as runAsUser may be overridden here). Its init "
        "containers and other containers get the node's identity env (TORCHJOB_JOB_NAME, "
        "TORCHJOB_NAMESPACE, TORCHJOB_NODE_INDEX, TORCHJOB_NUM_NODES, TORCHJOB_MASTER_ADDR, "
        "TORCHJOB_MASTER_PORT) ahead of their own; an entry of theirs with a reserved name is dropped.",
        properties={
            "metadata": metadata,
            "spec": opaque("core/v1 PodSpec: see `kubectl explain pod.spec`.", containers=containers),
        },
    )


def _workload() -> dict[str, Field]:
    """What runs: the image, the command torchrun starts, and how many processes on how many nodes."""
    return {
        "image": Str(
            "Trainer image. Required unless template.spec.containers[name=trainer].image is set.",
            min_length=1,
            max_length=MAX_STRING_LENGTH,
        ),
        "managedBy": Str(
            f"Controller that reconciles this job: {constants.CONTROLLER_NAME} (the default) or "
            "another one, such as kueue.x-k8s.io/multikueue, in which case this operator creates nothing and "
            "writes no status for it. Immutable.",
            max_length=MAX_MANAGED_BY_LENGTH,
            pattern=MANAGED_BY_PATTERN,
            rules=(Rule("self == oldSelf", _MANAGED_BY_IMMUTABLE_MSG, None),),
        ),
        "imagePullPolicy": Str("Always, IfNotPresent or Never.", enum=constants.IMAGE_PULL_POLICIES),
        "command": Array(
            "What torchrun starts in each process (an executable on PATH).",
            items=Str(),
            max_items=MAX_ARGS,
            min_items=1,
            default=list(constants.DEFAULT_COMMAND),
        ),
        "args": Array("Arguments of the command.", items=Str(), max_items=MAX_ARGS),
        "launcher": Str(
            "torchjob (torchjob-launch: runs torchrun and exits with the failing worker's exit "
            "code) or torchrun (plain torchrun --no-python, for images without torchjob).",
            enum=constants.LAUNCHERS,
            default="torchjob",
        ),
        "nodes": Int(
            "Pods, one torchrun agent each.",
            default=constants.DEFAULT_NODES,
            minimum=1,
            maximum=constants.MAX_NODES,
        ),
        "procsPerNode": IntOrAuto(
            "Processes per node: auto (one per GPU, else 1) or an integer.",
            minimum=1,
            maximum=constants.MAX_PROCS_PER_NODE,
        ),
        "backend": Str(
            "Process-group backend: auto (nccl with GPUs, else gloo), nccl or gloo.",
            enum=constants.BACKENDS,
            default="auto",
        ),
    }


def _environment() -> dict[str, Field]:
    """The trainer container's env and volumes."""
    return {
        "env": _env(),
        "envFrom": Array(
            "core/v1 EnvFromSource list for the trainer container.",
            items=opaque("A core/v1 EnvFromSource."),
            max_items=MAX_ENV,
        ),
        "volumes": _volumes(),
        "volumeMounts": _volume_mounts(),
    }


def _placement() -> dict[str, Field]:
    """Where and as whom the pods run."""
    name = MAX_NAME_LENGTH
    return {
        "nodeSelector": _string_map("Node labels the pods must match."),
        "tolerations": Array(
            "core/v1 Toleration list.",
            items=opaque("A core/v1 Toleration."),
            max_items=MAX_ENV,
        ),
        "affinity": opaque("core/v1 Affinity: see `kubectl explain pod.spec.affinity`."),
        "priorityClassName": Str("PriorityClass of the pods (and the Volcano PodGroup).", max_length=name),
        "schedulerName": Str(
            "Scheduler for the pods (default: volcano with a Volcano gang, else the cluster default).",
            max_length=name,
        ),
        "serviceAccountName": Str("ServiceAccount of the pods.", max_length=name),
        "automountServiceAccountToken": Bool(
            "Mount an API token into the pods (off: trainers need none).", default=False
        ),
    }


def _diagnostics() -> dict[str, Field]:
    return {
        "debug": Bool(
            "Distributed debugging presets: TORCH_DISTRIBUTED_DEBUG=INFO, "
            "TORCH_CPP_LOG_LEVEL=INFO, TORCH_SHOW_CPP_STACKTRACES=1, LOGLEVEL=INFO, and with nccl "
            "NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET and TORCH_NCCL_DESYNC_DEBUG=1. An env entry of the "
            "same name wins.",
            default=False,
        ),
        "networkInterface": Str(
            "Network interface(s) for collectives, e.g. eth0 or eth0,eth1: sets "
            "NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME (an env entry of the same name wins).",
            max_length=MAX_NETWORK_INTERFACE_LENGTH,
            pattern=NETWORK_INTERFACE_PATTERN,
        ),
    }


def _has_trainer_image(s: dict[str, Any]) -> bool:
    trainer = template_container(s.get("template") or {})
    return "image" in s or bool(trainer and trainer.get("image"))


def _memory_holds(s: Any) -> bool:
    limits, requests = s["resources"].get("limits", {}), s["resources"].get("requests", {})
    if "memory" not in limits:
        return True
    shm = s.get("sharedMemory", {}).get("sizeLimit", _SHM_FLOOR)
    need = quantity.to_bytes(str(requests.get("memory", 0))) + quantity.to_bytes(str(shm))
    return quantity.to_bytes(str(limits["memory"])) >= need


_SHM_FLOOR: Final = quantity.format_mi(constants.SHM_MIN_BYTES)


def _memory_covers_shm() -> Rule:
    """limits.memory >= requests.memory + /dev/shm, at admission where it can be priced.

    Declared on spec (the one node that sees resources and sharedMemory) and evaluated once per object,
    with each quantity parsed once and every string bounded by Quantity's maxLength, so the estimated cost
    stays small. Admission knows sizeLimit only when it is set; otherwise it checks the smallest /dev/shm
    torchjob derives (256Mi), and `load()` (the operator and the CLI) checks the derived size."""
    cel = (
        "!has(self.resources.limits) || !('memory' in self.resources.limits) || "
        "quantity(string(self.resources.limits['memory'])).compareTo("
        "quantity(has(self.resources.requests) && 'memory' in self.resources.requests ? "
        "string(self.resources.requests['memory']) : '0').add(quantity("
        "has(self.sharedMemory) && has(self.sharedMemory.sizeLimit) ? string(self.sharedMemory.sizeLimit) : "
        f"'{_SHM_FLOOR}'))) >= 0"
    )
    return Rule(
        cel,
        "spec.resources.limits.memory must be at least requests.memory + the /dev/shm size "
        f"(spec.sharedMemory.sizeLimit, or at least {_SHM_FLOOR} when derived), because /dev/shm pages "
        "count against the memory limit; raise limits.memory or lower spec.sharedMemory.sizeLimit",
        _memory_holds,
        ".resources.limits.memory",
    )


def _spec_rules() -> tuple[Rule, ...]:
    """Rules across spec's sections, each naming the field to fix."""
    return (
        Rule(
            "has(self.image) || (has(self.template) && has(self.template.spec) && "
            "has(self.template.spec.containers) && self.template.spec.containers.exists(c, "
            "c.name == 'trainer' && has(c.image) && c.image != ''))",
            "image is required unless spec.template.spec.containers[name=trainer].image is set",
            _has_trainer_image,
            ".image",
            required=True,
        ),
        Rule(
            "!has(self.elastic) || self.elastic.minNodes <= self.nodes",
            "minNodes must be less than or equal to spec.nodes",
            lambda s: "elastic" not in s or s["elastic"]["minNodes"] <= s["nodes"],
            ".elastic.minNodes",
        ),
        Rule(
            "!has(self.elastic) || self.nodes <= self.elastic.maxNodes",
            "maxNodes must be greater than or equal to spec.nodes",
            lambda s: "elastic" not in s or s["nodes"] <= s["elastic"]["maxNodes"],
            ".elastic.maxNodes",
        ),
        Rule(
            "self.backend != 'nccl' || self.resources.gpusPerNode > 0",
            "backend nccl needs GPUs: set spec.resources.gpusPerNode or use gloo",
            lambda s: s["backend"] != "nccl" or s["resources"]["gpusPerNode"] > 0,
            ".backend",
        ),
        Rule("has(self.managedBy) == has(oldSelf.managedBy)", _MANAGED_BY_IMMUTABLE_MSG, None, ".managedBy"),
        _memory_covers_shm(),
        Rule(
            "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
            "self.volumes.exists(v, v.name == m.name))",
            "every volumeMount must name a volume in spec.volumes",
            lambda s: (
                {m["name"] for m in s.get("volumeMounts", ())} <= {v["name"] for v in s.get("volumes", ())}
            ),
            ".volumeMounts",
        ),
        Rule(
            "!has(self.checkpoint.storage) || !has(self.volumeMounts) || "
            "!self.volumeMounts.exists(m, m.mountPath == self.checkpoint.dir)",
            "must not mount a volume at checkpoint.dir when checkpoint.storage is set",
            lambda s: (
                "storage" not in s["checkpoint"]
                or all(m["mountPath"] != s["checkpoint"]["dir"] for m in s.get("volumeMounts", ()))
            ),
            ".volumeMounts",
        ),
    )


SPEC: Final = Object(
    "Desired state of a distributed PyTorch training job.",
    properties={
        **_workload(),
        "resources": _resources(),
        **_environment(),
        **_placement(),
        **_diagnostics(),
        "dataLoader": _data_loader(),
        "sharedMemory": _shared_memory(),
        "checkpoint": _checkpoint(),
        "metrics": _metrics(),
        "elastic": _elastic(),
        "runPolicy": _run_policy(),
        "scheduling": _scheduling(),
        "template": _template(),
    },
    rules=_spec_rules(),
)

# Edits of a live job. Transition rules (oldSelf: updates only; load sees one version, so each has no Python
# predicate). They sit on the CRD's root, the one node that sees both the old spec and the old status.
_OLD_SUSPENDED: Final = (
    "has(oldSelf.spec.runPolicy) && has(oldSelf.spec.runPolicy.suspend) && oldSelf.spec.runPolicy.suspend "
    "&& (!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Suspended')"
)
# runPolicy is read live by every pass; managedBy and checkpoint.storage never change (their own rules).
_MUTABLE_WHILE_RUNNING: Final = ("runPolicy",)
_NEVER_MUTABLE: Final = ("managedBy",)
_CHECKPOINT_STORAGE_IMMUTABLE_MSG: Final = (
    "spec.checkpoint.storage is immutable: the claim is created once and holds the job's checkpoints; "
    "to change it, delete the job and create it again (with whenJobDeleted: Retain the new job mounts the "
    "same claim)"
)


def _unchanged(path: str) -> str:
    """`path` (under self and oldSelf) absent in both or equal in both."""
    return f"has(self.{path}) == has(oldSelf.{path}) && (!has(self.{path}) || self.{path} == oldSelf.{path})"


def _frozen_while_running(path: str) -> Rule:
    return Rule(
        f"({_OLD_SUSPENDED}) || ({_unchanged(path)})",
        f"{path} is immutable while the job runs: suspend it (spec.runPolicy.suspend: true) and change it "
        "once status.phase is Suspended",
        None,
        f".{path}",
    )


def _transition_rules() -> tuple[Rule, ...]:
    """The spec is frozen while the job runs, except runPolicy (suspend, deadlines, TTL, backoff, exit
    codes, cleanPodPolicy and successPolicy: every pass reads them afresh). Once the old object is
    suspended and the operator has reported Suspended (its pods are deleted), the rest may change:
    resume renders the pods from the new spec.
    checkpoint.storage never changes: its claim is created once and kept."""
    frozen = [n for n in SPEC.properties if n not in (*_MUTABLE_WHILE_RUNNING, *_NEVER_MUTABLE, "checkpoint")]
    return (
        *(_frozen_while_running(f"spec.{name}") for name in frozen),
        _frozen_while_running("spec.checkpoint.dir"),
        Rule(
            _unchanged("spec.checkpoint.storage"),
            _CHECKPOINT_STORAGE_IMMUTABLE_MSG,
            None,
            ".spec.checkpoint.storage",
        ),
    )


ROOT_RULES: Final = _transition_rules()

# What load reads of metadata. The CRD may restrict only metadata.name (the apiserver owns the rest), so
# the CRD takes just `name` from here.
METADATA: Final = Object(
    properties={
        "name": Str(max_length=constants.MAX_JOB_NAME_LENGTH, pattern=constants.DNS_LABEL_PATTERN),
        "namespace": Str(default="default", max_length=63),
        "uid": Str(default=""),
        "generation": Int(default=0, minimum=0, fmt="int64"),
        "labels": _string_map("", max_properties=10_000),
        "annotations": _string_map("", max_properties=10_000),
    },
    required=("name",),
    default={},
    preserve_unknown=True,
)


def _condition() -> Object:
    return Object(
        "One condition of the job.",
        properties={
            "type": Str(_one_of(constants.CONDITION_TYPES) + ".", max_length=64),
            "status": Str("True, False or Unknown.", enum=("True", "False", "Unknown")),
            "reason": Str(
                "CamelCase reason (e.g. Unschedulable, ImagePullBackOff, BackoffLimitExceeded).",
                max_length=1024,
            ),
            "message": Str("Human-readable detail.", max_length=32768),
            "lastTransitionTime": Str("When status last changed.", fmt="date-time"),
            "observedGeneration": Int("metadata.generation this condition was computed from.", fmt="int64"),
        },
        required=("type", "status"),
    )


# restartCount goes up once per failure the operator handles by restarting: a gang restart or an elastic
# node replacement (however many nodes it replaces), whether or not a disruption caused it.
RESTART_COUNT_DESCRIPTION: Final = (
    "Restarts so far: gang restarts plus elastic node replacements, including those caused by a disruption "
    "(which do not count against backoffLimit)."
)


def _status_counts() -> dict[str, Field]:
    """Restart bookkeeping; restartCount is also the Restarts printer column."""
    return {
        "attempt": Int("Current gang attempt (pods are named ...-r<attempt>)."),
        "restartCount": Int(RESTART_COUNT_DESCRIPTION),
        "disruptions": Int(
            "Restarts caused by a disruption (preemption, eviction, drain, node loss); these do "
            "not count against backoffLimit."
        ),
        "nodeReplacements": Array(
            "Elastic jobs: how often each node (by index) was replaced alone in the current "
            "attempt; a replacement pod is named ...-r<attempt>-<n>.",
            items=Int("Replacements of this node."),
            max_items=constants.MAX_NODES,
        ),
        "replacingNodes": Array(
            "Elastic jobs: nodes whose replacement pod has not been seen yet.",
            items=Int("Node index."),
            max_items=constants.MAX_NODES,
        ),
    }


def _status_times() -> dict[str, Field]:
    return {
        "startTime": Str("When the operator first created pods.", fmt="date-time"),
        "runningTime": Str("When all ranks of the current attempt were first running.", fmt="date-time"),
        "completionTime": Str("When the job Succeeded or Failed.", fmt="date-time"),
        "lastRestartTime": Str("When the latest gang restart or node replacement began.", fmt="date-time"),
    }


def _last_failure() -> Object:
    return Object(
        "The pod that failed first in the latest failed attempt (JobSet's first failed job): the one that "
        "caused the restart or the failure, as peers of a failed rank usually fail after it.",
        properties={
            "pod": Str("Pod name."),
            "nodeIndex": Int("Node index of the pod (torchjob.dev/node-index)."),
            "node": Str("Kubernetes node the pod ran on (spec.nodeName)."),
            "ranks": Str("Global ranks the pod ran, e.g. 4-7 (fixed-size jobs; elastic ranks move)."),
            "attempt": Int("Gang attempt the pod belonged to."),
            "exitCode": Int("Exit code of its trainer container.", nullable=True),
            "reason": Str("OOMKilled, Error, Evicted, DeletionByPodGC, PodDeleted, ..."),
            "message": Str("The container's or the pod's message, if any.", max_length=32768),
            "finishedAt": Str("When its trainer container ended (if known).", fmt="date-time"),
            "summary": Str("One line: pod, node, reason and exit code (printer column Failure)."),
        },
    )


def _status_progress() -> Object:
    """What the operator last read from rank 0's metrics endpoint; four fields are printer columns."""
    return Object(
        "Training progress the operator read from rank 0's metrics endpoint while the job ran (at a bounded "
        "rate per job and across jobs; see docs/operator.md). Kept after the job stops running, without "
        "etaSeconds and eta.",
        properties={
            "step": Int("Global step rank 0 had reached.", fmt="int64", minimum=0),
            "totalSteps": Int("Global step at which training ends (epochs x steps per epoch).", fmt="int64"),
            "steps": Str("step/totalSteps, e.g. 420/1000 (printer column Progress)."),
            "epoch": Int("Current epoch (0-based).", minimum=0),
            "samplesPerSecond": Num(
                "Job throughput: rank 0's samples per second over its last window times the world size "
                "(printer column Samples/s, -o wide).",
                minimum=0,
            ),
            "dataWaitRatio": Num(
                "Share of rank 0's step time spent waiting for a batch, 0-1 (printer column Data-Wait, "
                "-o wide).",
                minimum=0,
            ),
            "etaSeconds": Int(
                "Estimated seconds until totalSteps at the step rate between the last two reads; absent "
                "while unknown and once the job is not running.",
                fmt="int64",
                minimum=0,
            ),
            "eta": Str("etaSeconds as a duration, e.g. 8m20s (printer column ETA)."),
            "readTime": Str("When the operator read these figures.", fmt="date-time"),
            "pod": Str("The pod whose rank 0 endpoint was read.", max_length=MAX_NAME_LENGTH),
        },
    )


STATUS: Final = Object(
    "Observed state, written by the operator.",
    properties={
        "phase": Str(_one_of(constants.PHASES) + ".", enum=constants.PHASES),
        "reason": Str("Short CamelCase reason of the current phase (printer column).", max_length=1024),
        "message": Str("Human-readable detail of the current phase.", max_length=32768),
        "conditions": Array(
            "Conditions, one per type.",
            items=_condition(),
            max_items=16,
            map_keys=("type",),
        ),
        **_status_counts(),
        "nodes": Object(
            "Pods of the current attempt by phase.",
            properties={
                k: Int(f"{k.capitalize()} pods.")
                for k in ("total", "pending", "running", "succeeded", "failed")
            },
        ),
        "nodesReady": Str("running/total pods of the current attempt, e.g. 2/2 (printer column)."),
        "lastExitCode": Int("Exit code of the latest failed trainer container.", nullable=True),
        "lastFailure": _last_failure(),
        "progress": _status_progress(),
        **_status_times(),
        "observedGeneration": Int("metadata.generation the status was computed from.", fmt="int64"),
    },
)
