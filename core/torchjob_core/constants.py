"""Names shared by the CRD, the renderers, the operator and the CLI (see docs/contracts.md)."""

from __future__ import annotations

from typing import Final

# API identity.
GROUP: Final = "torchjob.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "TrainingJob"
LIST_KIND: Final = "TrainingJobList"
PLURAL: Final = "trainingjobs"
SINGULAR: Final = "trainingjob"
SHORT_NAME: Final = "tj"
CATEGORY: Final = "torchjob"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Kopf's finalizer and progress annotations live under our own prefix, never kopf.zalando.org.
OPERATOR_PREFIX: Final = f"operator.{GROUP}"
FINALIZER: Final = f"{OPERATOR_PREFIX}/finalizer"

# Labels on every child object.
LABEL_JOB_NAME: Final = f"{GROUP}/job-name"
LABEL_NODE_INDEX: Final = f"{GROUP}/node-index"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
LABEL_REPLACEMENT: Final = f"{GROUP}/replacement"  # only on elastic replacement pods (absent: 0)
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_APP_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
APP_NAME: Final = "torchjob"
COMPONENT_TRAINER: Final = "trainer"
MANAGED_BY: Final = "torchjob-operator"
# spec.managedBy: the controller that reconciles a job. Any other value (Kueue's MultiKueue, say) makes
# this operator leave the job alone.
CONTROLLER_NAME: Final = f"{GROUP}/operator"

# Third-party scheduling integrations.
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"
# Kueue's pod-group integration (docs/scheduling.md): one Workload for the pods that share the group
# label, admitted when quota for the whole total count is free; until then Kueue's gate holds each pod.
LABEL_KUEUE_POD_GROUP: Final = "kueue.x-k8s.io/pod-group-name"
ANNOTATION_KUEUE_POD_GROUP_TOTAL: Final = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_ADMISSION_GATE: Final = "kueue.x-k8s.io/admission"
# spec.scheduling.workloadPriorityClass: Kueue reads this label from the group's pods for its Workload's
# priority (pkg/controller/constants WorkloadPriorityClassLabel).
LABEL_KUEUE_PRIORITY_CLASS: Final = "kueue.x-k8s.io/priority-class"
# spec.scheduling.topology: Kueue's Topology-Aware Scheduling request of the group's PodSet, read from the
# pods' annotations (apis/kueue/v1beta2 PodSet*TopologyAnnotation). A pod may carry at most one of the three.
ANNOTATION_KUEUE_REQUIRED_TOPOLOGY: Final = "kueue.x-k8s.io/podset-required-topology"
ANNOTATION_KUEUE_PREFERRED_TOPOLOGY: Final = "kueue.x-k8s.io/podset-preferred-topology"
ANNOTATION_KUEUE_UNCONSTRAINED_TOPOLOGY: Final = "kueue.x-k8s.io/podset-unconstrained-topology"
KUEUE_TOPOLOGY_ANNOTATIONS: Final = (
    ANNOTATION_KUEUE_REQUIRED_TOPOLOGY,
    ANNOTATION_KUEUE_PREFERRED_TOPOLOGY,
    ANNOTATION_KUEUE_UNCONSTRAINED_TOPOLOGY,
)
# The pod condition Kueue sets on the pods it stops (preemption, eviction) before it deletes them.
KUEUE_TERMINATION_CONDITION: Final = "TerminationTarget"
ANNOTATION_VOLCANO_GROUP: Final = "scheduling.k8s.io/group-name"
LABEL_COSCHEDULING_GROUP: Final = "scheduling.x-k8s.io/pod-group"
VOLCANO_SCHEDULER_NAME: Final = "volcano"
VOLCANO_PODGROUP_API_VERSION: Final = "scheduling.volcano.sh/v1beta1"
COSCHEDULING_PODGROUP_API_VERSION: Final = "scheduling.x-k8s.io/v1alpha1"
# Kubernetes' own gang scheduling (kube-scheduler's GangScheduling plugin; alpha gates GenericWorkload and
# GangScheduling): the 1.36 API, a PodGroup the pods name in spec.schedulingGroup.podGroupName.
KUBERNETES_PODGROUP_API_VERSION: Final = "scheduling.k8s.io/v1alpha2"
# The first is the default of spec.scheduling.gangScheduler.
GANG_SCHEDULERS: Final = ("volcano", "coscheduling", "kubernetes")

# GPUs through Dynamic Resource Allocation (spec.resources.gpuDeviceClassName; resource.k8s.io is GA in 1.34).
RESOURCE_CLAIM_API_VERSION: Final = "resource.k8s.io/v1"
GPU_CLAIM_NAME: Final = "torchjob-gpus"  # the pod's resourceClaims entry and the container's claim
GPU_CLAIM_REQUEST: Final = "gpus"  # the device request inside the claim

# Framework annotations that must not be copied from a template onto pods.
IGNORED_ANNOTATION_PREFIXES: Final = (
    "kopf.zalando.org",
    OPERATOR_PREFIX,
    "kubectl.kubernetes.io",
)

# Pod shape.
CONTAINER_NAME: Final = "trainer"
LAUNCHER_COMMAND: Final = "torchjob-launch"
TORCHRUN_COMMAND: Final = "torchrun"
LAUNCHERS: Final = ("torchjob", "torchrun")
DEFAULT_COMMAND: Final = ("torchjob-train",)
SHM_VOLUME_NAME: Final = "dshm"
SHM_MOUNT_PATH: Final = "/dev/shm"
# An emptyDir at checkpoint.dir when no volumeMount covers it: always writable, survives in-pod restarts.
CHECKPOINT_VOLUME_NAME: Final = "torchjob-checkpoints"
RESERVED_VOLUME_NAMES: Final = (SHM_VOLUME_NAME, CHECKPOINT_VOLUME_NAME)
# spec.checkpoint.storage: the claim the operator creates is `<job><CHECKPOINT_CLAIM_SUFFIX>`.
CHECKPOINT_CLAIM_SUFFIX: Final = "-checkpoints"
CLAIM_ACCESS_MODES: Final = ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany")
DEFAULT_CLAIM_ACCESS_MODE: Final = "ReadWriteOnce"
SHARED_CLAIM_ACCESS_MODE: Final = "ReadWriteMany"  # the one mode every pod may mount
CLAIM_RETENTION_POLICIES: Final = ("Delete", "Retain")
# status.conditions: True when checkpoints die with their pod (an emptyDir at checkpoint.dir).
CHECKPOINTS_EPHEMERAL: Final = "CheckpointsEphemeral"
# A job whose pods cannot be created yet (an API they need is not served) tries again this often.
BLOCKED_RETRY_SECONDS: Final = 30.0
# Time for the trainer to write its SIGTERM checkpoint; a template may set another value.
DEFAULT_TERMINATION_GRACE_SECONDS: Final = 60
# The trainer image runs as this non-root user; a template securityContext may override it.
RUN_AS_USER: Final = 10001
RUN_AS_GROUP: Final = 10001

# Ports.
STATIC_RDZV_PORT: Final = 29500
ELASTIC_RDZV_PORT: Final = 29400
RDZV_PORT_NAME: Final = "rendezvous"
DEFAULT_METRICS_PORT: Final = 9400
METRICS_PORT_NAME_PREFIX: Final = "metrics-"

# Every series the trainer exports starts with this; the operator's progress reads, the CLI's top and
# local run, and the chart's dashboard read them by it.
TRAINER_METRIC_PREFIX: Final = "torchjob_trainer_"

# The trainer reads `TORCHJOB_<FLAG>` for each of its flags; the renderers write some of them.
TRAINER_ENV_PREFIX: Final = "TORCHJOB_"
PREEMPTION_GRACE_ENV: Final = f"{TRAINER_ENV_PREFIX}PREEMPTION_GRACE_SECONDS"

# Env the operator owns; a user env that sets one is rejected at admission.
RESERVED_ENV_PREFIXES: Final = ("PET_", TRAINER_ENV_PREFIX)
TORCH_DISABLE_SHARED_STORE_ENV: Final = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"  # elastic jobs (render.env)
RESERVED_ENV_NAMES: Final = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    TORCH_DISABLE_SHARED_STORE_ENV,
)

# Spec defaults and bounds (the CRD and spec.load share these).
DEFAULT_NODES: Final = 1
MAX_NODES: Final = 1000
MAX_PROCS_PER_NODE: Final = 128
MAX_GPUS_PER_NODE: Final = 128
DEFAULT_GPU_RESOURCE: Final = "nvidia.com/gpu"
BACKENDS: Final = ("auto", "nccl", "gloo")
PIN_MEMORY_VALUES: Final = ("auto", "true", "false")
IMAGE_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
DEFAULT_PREFETCH_FACTOR: Final = 2
MAX_PREFETCH_FACTOR: Final = 64
MAX_NUM_WORKERS: Final = 256
DEFAULT_AUTOTUNE_SECONDS: Final = 60
MAX_AUTOTUNE_SECONDS: Final = 3600
DEFAULT_BATCH_BYTES_HINT: Final = "64Mi"
DEFAULT_CHECKPOINT_DIR: Final = "/checkpoints"
DEFAULT_BACKOFF_LIMIT: Final = 3
MAX_BACKOFF_LIMIT: Final = 1000
DEFAULT_BACKOFF_SECONDS: Final = 10
MAX_BACKOFF_SECONDS: Final = 300
DEFAULT_RETRYABLE_EXIT_CODES: Final = (137, 143)
# The trainer could not write a checkpoint (read-only, full, over quota, no permission): sysexits'
# EX_CANTCREAT. Permanent by default (failure_policy.classify_exit says why).
EXIT_CHECKPOINT_WRITE_FAILED: Final = 73
# A node other than node 0 could not reach the rendezvous store in time (torchjob-launch's wait):
# sysexits' EX_UNAVAILABLE. Permanent by the default rule (1-127): node 0's pod is what needs fixing.
EXIT_RENDEZVOUS_UNREACHABLE: Final = 69
CLEAN_POD_POLICIES: Final = ("None", "Running", "All")
DEFAULT_CLEAN_POD_POLICY: Final = "Running"
# spec.runPolicy.successPolicy (success_policy.py): every node, node 0, or the first node to succeed. No
# schema default: absent means AllNodes for a fixed-size job and AnyNode for an elastic one.
SUCCESS_POLICIES: Final = ("AllNodes", "Node0", "AnyNode")
DEFAULT_ELASTIC_MIN_NODES: Final = 1
DEFAULT_ELASTIC_MAX_RESTARTS: Final = 3
MAX_ELASTIC_RESTARTS: Final = 1000
# c10d rendezvous timeouts (PET_RDZV_CONF; spec.elastic's descriptions say why these defaults).
DEFAULT_ELASTIC_LAST_CALL_SECONDS: Final = 5
MAX_ELASTIC_LAST_CALL_SECONDS: Final = 3600
DEFAULT_ELASTIC_JOIN_TIMEOUT_SECONDS: Final = 600  # torch's own
MAX_ELASTIC_JOIN_TIMEOUT_SECONDS: Final = 86400

# /dev/shm sizing (see torchjob_core.sizing).
SHM_MIN_BYTES: Final = 256 * 1024 * 1024
# The share of /dev/shm the trainer lets its loaders fill; the rest is a margin for other users of the
# mount (semaphores, torch's shared-memory manager, tools). The default size is the need over this.
SHM_HEADROOM_PERCENT: Final = 80
# Workers assumed per process when numWorkers is auto and no CPU request or limit is set.
DEFAULT_WORKER_ESTIMATE: Final = 4
# numWorkers auto (torchjob_core.sizing.auto_workers): workers per CPU of a process, and the cap.
# One and a half: the half fills the cores' idle moments, and the workers' niceness keeps it from slowing
# the step; at two per CPU each sample's decode costs more (docs/benchmarks-dataloader.md).
AUTO_WORKERS_PER_CPU: Final = 1.5
MAX_AUTO_WORKERS: Final = 16

# Name lengths: hostname `<job>-node-<index>` must fit a 63-character DNS label with index <= 999.
MAX_JOB_NAME_LENGTH: Final = 50
DNS_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Job phase vocabulary (status.phase); each phase is also a condition type (torchjob_core.status).
PHASES: Final = ("Created", "Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
TERMINAL_PHASES: Final = ("Succeeded", "Failed")
# Every status.conditions type the operator writes.
CONDITION_TYPES: Final = (*PHASES, CHECKPOINTS_EPHEMERAL)
