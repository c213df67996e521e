"""The TrainingJob v1alpha1 spec as typed, frozen dataclasses (snake_case of the CRD's fields)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from torchjob_core import constants, sizing

Auto: TypeAlias = Literal["auto"]
JSON: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class Metadata:
    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    gpus_per_node: int = 0
    gpu_resource_name: str = constants.DEFAULT_GPU_RESOURCE
    # Set: the GPUs come from a DRA ResourceClaimTemplate of this DeviceClass, not gpu_resource_name.
    gpu_device_class_name: str | None = None
    gpu_memory_fraction: float | None = None
    # Quantities as written (ints become strings).
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataLoader:
    num_workers: int | Auto = "auto"
    pin_memory: Literal["auto", "true", "false"] = "auto"
    persistent_workers: bool = True
    prefetch_factor: int = constants.DEFAULT_PREFETCH_FACTOR
    batch_bytes_hint: str = constants.DEFAULT_BATCH_BYTES_HINT
    autotune: bool = False
    autotune_seconds: int = constants.DEFAULT_AUTOTUNE_SECONDS


@dataclass(frozen=True)
class SharedMemory:
    size_limit: str | None = None


@dataclass(frozen=True)
class CheckpointStorage:
    size: str | None = None
    storage_class_name: str | None = None
    access_modes: tuple[str, ...] = (constants.DEFAULT_CLAIM_ACCESS_MODE,)
    existing_claim: str | None = None
    when_job_deleted: Literal["Delete", "Retain"] = constants.CLAIM_RETENTION_POLICIES[0]

    @property
    def creates_claim(self) -> bool:
        """The operator creates the claim (size), rather than mounting the user's (existingClaim)."""
        return self.existing_claim is None

    @property
    def shared(self) -> bool:
        """Every pod may mount it (ReadWriteMany); else only node 0's pod does."""
        return constants.SHARED_CLAIM_ACCESS_MODE in self.access_modes


@dataclass(frozen=True)
class Checkpoint:
    dir: str = constants.DEFAULT_CHECKPOINT_DIR
    storage: CheckpointStorage | None = None


@dataclass(frozen=True)
class Metrics:
    port: int = constants.DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class Elastic:
    max_nodes: int
    min_nodes: int = constants.DEFAULT_ELASTIC_MIN_NODES
    max_restarts: int = constants.DEFAULT_ELASTIC_MAX_RESTARTS
    last_call_timeout_seconds: int = constants.DEFAULT_ELASTIC_LAST_CALL_SECONDS
    join_timeout_seconds: int = constants.DEFAULT_ELASTIC_JOIN_TIMEOUT_SECONDS


@dataclass(frozen=True)
class RunPolicy:
    backoff_limit: int = constants.DEFAULT_BACKOFF_LIMIT
    backoff_seconds: int = constants.DEFAULT_BACKOFF_SECONDS
    retryable_exit_codes: tuple[int, ...] = constants.DEFAULT_RETRYABLE_EXIT_CODES
    permanent_exit_codes: tuple[int, ...] = ()
    active_deadline_seconds: int | None = None
    startup_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    clean_pod_policy: Literal["None", "Running", "All"] = constants.DEFAULT_CLEAN_POD_POLICY
    suspend: bool = False
    # As written; `success_policy.SuccessPolicy.of` applies the default of the job's kind.
    success_policy: Literal["AllNodes", "Node0", "AnyNode"] | None = None


@dataclass(frozen=True)
class Topology:
    """Kueue Topology-Aware Scheduling: exactly one of the two is a topology level's node label."""

    required: str | None = None
    preferred: str | None = None


@dataclass(frozen=True)
class Scheduling:
    gang: bool = False
    # As written; `effective_gang_scheduler` applies the default.
    gang_scheduler: str | None = None
    queue: str | None = None
    workload_priority_class: str | None = None
    topology: Topology | None = None

    @property
    def effective_gang_scheduler(self) -> str | None:
        """The gang scheduler in use: None without gang, else the one asked for (default volcano)."""
        if not self.gang:
            return None
        return self.gang_scheduler or constants.GANG_SCHEDULERS[0]


@dataclass(frozen=True)
class TrainingJobSpec:
    image: str | None = None
    managed_by: str = constants.CONTROLLER_NAME
    image_pull_policy: str | None = None
    command: tuple[str, ...] = constants.DEFAULT_COMMAND
    args: tuple[str, ...] = ()
    launcher: Literal["torchjob", "torchrun"] = "torchjob"
    nodes: int = constants.DEFAULT_NODES
    procs_per_node: int | Auto = "auto"
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    resources: Resources = field(default_factory=Resources)
    # Core/v1 objects stay plain dicts; renderers deep-copy them.
    env: tuple[JSON, ...] = ()
    env_from: tuple[JSON, ...] = ()
    volumes: tuple[JSON, ...] = ()
    volume_mounts: tuple[JSON, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[JSON, ...] = ()
    affinity: JSON | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool = False
    debug: bool = False
    network_interface: str | None = None
    data_loader: DataLoader = field(default_factory=DataLoader)
    shared_memory: SharedMemory = field(default_factory=SharedMemory)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    metrics: Metrics = field(default_factory=Metrics)
    elastic: Elastic | None = None
    run_policy: RunPolicy = field(default_factory=RunPolicy)
    scheduling: Scheduling = field(default_factory=Scheduling)
    template: JSON = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingJob:
    metadata: Metadata
    spec: TrainingJobSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def nproc_per_node(self) -> int:
        """Processes per node with `auto` resolved."""
        return sizing.nproc_per_node(self.spec)

    @property
    def backend(self) -> str:
        """`nccl` or `gloo` with `auto` resolved."""
        return sizing.effective_backend(self.spec)

    @property
    def shm_size_limit(self) -> str:
        """The /dev/shm sizeLimit the pods get."""
        return sizing.shm_size_limit(self.spec)


def template_container(template: Mapping[str, Any], name: str = constants.CONTAINER_NAME) -> JSON | None:
    """The template's container with this name, if any."""
    for c in (template.get("spec") or {}).get("containers") or []:
        if isinstance(c, dict) and c.get("name") == name:
            return c
    return None
