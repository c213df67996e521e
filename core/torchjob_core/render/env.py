"""The env of a node's pod (see contracts): the node's identity in every container, and in the trainer
container also torchrun's PET_* and the trainer's TORCHJOB_* settings."""

from __future__ import annotations

from typing import Any, Final

from torchjob_core import constants
from torchjob_core.spec import Elastic, TrainingJob

EnvVar = dict[str, Any]

TORCHJOB_JOB_NAME: Final = "TORCHJOB_JOB_NAME"
TORCHJOB_NAMESPACE: Final = "TORCHJOB_NAMESPACE"
TORCHJOB_NODE_INDEX: Final = "TORCHJOB_NODE_INDEX"
TORCHJOB_NUM_NODES: Final = "TORCHJOB_NUM_NODES"
TORCHJOB_MASTER_ADDR: Final = "TORCHJOB_MASTER_ADDR"
TORCHJOB_MASTER_PORT: Final = "TORCHJOB_MASTER_PORT"
TORCHJOB_BACKEND: Final = "TORCHJOB_BACKEND"
TORCHJOB_NUM_WORKERS: Final = "TORCHJOB_NUM_WORKERS"
TORCHJOB_PIN_MEMORY: Final = "TORCHJOB_PIN_MEMORY"
TORCHJOB_PERSISTENT_WORKERS: Final = "TORCHJOB_PERSISTENT_WORKERS"
TORCHJOB_PREFETCH_FACTOR: Final = "TORCHJOB_PREFETCH_FACTOR"
TORCHJOB_AUTOTUNE: Final = "TORCHJOB_AUTOTUNE"
TORCHJOB_AUTOTUNE_SECONDS: Final = "TORCHJOB_AUTOTUNE_SECONDS"
TORCHJOB_CUDA_MEMORY_FRACTION: Final = "TORCHJOB_CUDA_MEMORY_FRACTION"
TORCHJOB_CPU_LIMIT: Final = "TORCHJOB_CPU_LIMIT"
TORCHJOB_METRICS_PORT: Final = "TORCHJOB_METRICS_PORT"
TORCHJOB_CHECKPOINT_DIR: Final = "TORCHJOB_CHECKPOINT_DIR"
TORCHJOB_TERMINATION_LOG: Final = "TORCHJOB_TERMINATION_LOG"
TORCHJOB_SUMMARY_FILE: Final = "TORCHJOB_SUMMARY_FILE"  # only the CLI's local run sets it

# What node_env emits, in every container of a pod. The trainer reads the job name and namespace; the
# rest are for the user's command, init containers and sidecars.
NODE_ENV_NAMES: Final = (
    TORCHJOB_JOB_NAME,
    TORCHJOB_NAMESPACE,
    TORCHJOB_NODE_INDEX,
    TORCHJOB_NUM_NODES,
    TORCHJOB_MASTER_ADDR,
    TORCHJOB_MASTER_PORT,
)
# Every TORCHJOB_* trainer_env can emit; tests/unit/test_env_contract.py checks each is a trainer flag.
TRAINER_ENV_NAMES: Final = (
    TORCHJOB_BACKEND,
    TORCHJOB_NUM_WORKERS,
    TORCHJOB_PIN_MEMORY,
    TORCHJOB_PERSISTENT_WORKERS,
    TORCHJOB_PREFETCH_FACTOR,
    TORCHJOB_AUTOTUNE,
    TORCHJOB_AUTOTUNE_SECONDS,
    TORCHJOB_CPU_LIMIT,
    TORCHJOB_METRICS_PORT,
    TORCHJOB_CHECKPOINT_DIR,
    TORCHJOB_CUDA_MEMORY_FRACTION,
    TORCHJOB_TERMINATION_LOG,
)
# Emitted only when their field is set: the trainer's own default stands otherwise (no GPU memory cap;
# Kubernetes' /dev/termination-log).
OPTIONAL_TRAINER_ENV_NAMES: Final = (TORCHJOB_CUDA_MEMORY_FRACTION, TORCHJOB_TERMINATION_LOG)


# spec.debug: what torch and NCCL print to explain a hang or a mismatch (TorchX's `debug` has the like).
# Not DETAIL: its collective fingerprinting segfaults DDP's constructor on gloo in torch 2.15
# (tests/torchrun/test_cli_local_debug.py runs the preset for real).
DEBUG_ENV: Final = (
    ("TORCH_DISTRIBUTED_DEBUG", "INFO"),
    ("TORCH_CPP_LOG_LEVEL", "INFO"),
    ("TORCH_SHOW_CPP_STACKTRACES", "1"),
    ("LOGLEVEL", "INFO"),
)
NCCL_DEBUG_ENV: Final = (
    ("NCCL_DEBUG", "INFO"),
    ("NCCL_DEBUG_SUBSYS", "INIT,NET"),
    ("TORCH_NCCL_DESYNC_DEBUG", "1"),
)
SOCKET_IFNAME_ENV: Final = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


def _var(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def rdzv_port(job: TrainingJob) -> int:
    """29500 for static rendezvous (master), 29400 for c10d (elastic)."""
    return constants.ELASTIC_RDZV_PORT if job.spec.elastic is not None else constants.STATIC_RDZV_PORT


def _rendezvous_port(job: TrainingJob, static: int | None, elastic: int | None) -> int:
    """The port node 0 serves the rendezvous on: `static` (torchrun_env's master_port) for a fixed-size
    job, `elastic` (its rdzv_port) for an elastic one, else the default rdzv_port(job)."""
    given = static if job.spec.elastic is None else elastic
    return given if given is not None else rdzv_port(job)


def nnodes(job: TrainingJob) -> str:
    """torchrun --nnodes: `N` for a fixed size (no last call), `MIN:MAX` when elastic."""
    elastic = job.spec.elastic
    if elastic is None:
        return str(job.spec.nodes)
    return f"{elastic.min_nodes}:{elastic.max_nodes}"


def rdzv_conf(elastic: Elastic, node_rank: int) -> str:
    """torchrun --rdzv-conf for the c10d rendezvous: the keys torch's dynamic handler reads.

    Node 0 hosts the c10d store, always: torch's own guess (hostname match, else whoever binds first)
    can pick another node, whose loss then takes the rendezvous with it. The timeouts come from
    spec.elastic, never torch's defaults (its 30 s last call would stall every round of a job with
    nodes < maxNodes).
    """
    return (
        f"is_host={1 if node_rank == 0 else 0},"
        f"last_call_timeout={elastic.last_call_timeout_seconds},"
        f"join_timeout={elastic.join_timeout_seconds}"
    )


def torchrun_env(
    job: TrainingJob,
    node_rank: int,
    *,
    master_addr: str,
    master_port: int | None = None,
    rdzv_port: int | None = None,
) -> list[EnvVar]:
    """torchrun's own configuration (it reads PET_<FLAG> as the default of each flag).

    Static jobs rendezvous at node 0's master port with a fixed node rank; elastic jobs use the c10d
    rendezvous hosted by node 0, and torchrun assigns ranks.
    """
    env = [_var("PET_NNODES", nnodes(job)), _var("PET_NPROC_PER_NODE", job.nproc_per_node)]
    port = _rendezvous_port(job, master_port, rdzv_port)
    elastic = job.spec.elastic
    if elastic is None:
        env += [
            _var("PET_NODE_RANK", node_rank),
            _var("PET_MASTER_ADDR", master_addr),
            _var("PET_MASTER_PORT", port),
        ]
    else:
        env += [
            _var("PET_RDZV_BACKEND", "c10d"),
            _var("PET_RDZV_ENDPOINT", f"{master_addr}:{port}"),
            _var("PET_RDZV_ID", job.name),
            _var("PET_RDZV_CONF", rdzv_conf(elastic, node_rank)),
            _var("PET_MAX_RESTARTS", elastic.max_restarts),
            # torch shares the rendezvous TCPStore with the workers, but then a node that joins a later
            # round (a replacement, or scale-up) waits forever for MASTER_ADDR, which only the first
            # round wrote. The opt-out writes it every round (tests/torchrun/test_trainer_elastic_*).
            _var(constants.TORCH_DISABLE_SHARED_STORE_ENV, "1"),
        ]
    return env


def node_env(
    job: TrainingJob,
    node_index: int,
    *,
    master_addr: str,
    master_port: int | None = None,
    rdzv_port: int | None = None,
) -> list[EnvVar]:
    """The node's identity, which every container of its pod gets (init containers and sidecars too,
    e.g. to fetch a node's shard of the data before the trainer starts).

    TORCHJOB_NODE_INDEX is the pod's node index, 0 to nodes - 1 (PET_NODE_RANK of a fixed-size job; an
    elastic job's replacement pod keeps the index, while torchrun assigns the ranks). TORCHJOB_NUM_NODES
    is spec.nodes, the pods torchjob creates. TORCHJOB_MASTER_ADDR/PORT is node 0's rendezvous endpoint,
    the ports as torchrun_env takes them.
    """
    return [
        _var(TORCHJOB_JOB_NAME, job.name),
        _var(TORCHJOB_NAMESPACE, job.namespace),
        _var(TORCHJOB_NODE_INDEX, node_index),
        _var(TORCHJOB_NUM_NODES, job.spec.nodes),
        _var(TORCHJOB_MASTER_ADDR, master_addr),
        _var(TORCHJOB_MASTER_PORT, _rendezvous_port(job, master_port, rdzv_port)),
    ]


def preset_env(job: TrainingJob) -> list[EnvVar]:
    """Defaults from spec.debug and spec.networkInterface; an env entry of the same name overrides each."""
    presets: list[tuple[str, str]] = []
    if job.spec.debug:
        presets += DEBUG_ENV
        if job.backend == "nccl":
            presets += NCCL_DEBUG_ENV
    if job.spec.network_interface:
        presets += [(name, job.spec.network_interface) for name in SOCKET_IFNAME_ENV]
    return [_var(name, value) for name, value in presets]


def termination_log_env(container: dict[str, Any]) -> list[EnvVar]:
    """Where the trainer writes a fatal error's cause: the container's own terminationMessagePath when the
    template moves it, so the kubelet still finds the message (the trainer's default is Kubernetes')."""
    path = container.get("terminationMessagePath")
    return [_var(TORCHJOB_TERMINATION_LOG, path)] if path else []


def trainer_env(job: TrainingJob, *, cpu_limit: str | None = None) -> list[EnvVar]:
    """The trainer's TORCHJOB_* settings (its job name and namespace come with node_env).

    In pods TORCHJOB_CPU_LIMIT comes from the downward API (whole cores, rounded up); a local run passes
    `cpu_limit` as a plain value instead.
    """
    dl = job.spec.data_loader
    cpu: EnvVar
    if cpu_limit is None:
        cpu = {
            "name": TORCHJOB_CPU_LIMIT,
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": constants.CONTAINER_NAME,
                    "resource": "limits.cpu",
                    "divisor": "1",
                }
            },
        }
    else:
        cpu = _var(TORCHJOB_CPU_LIMIT, cpu_limit)
    return [
        _var(TORCHJOB_BACKEND, job.backend),
        _var(TORCHJOB_NUM_WORKERS, dl.num_workers),
        _var(TORCHJOB_PIN_MEMORY, dl.pin_memory),
        _var(TORCHJOB_PERSISTENT_WORKERS, "true" if dl.persistent_workers else "false"),
        _var(TORCHJOB_PREFETCH_FACTOR, dl.prefetch_factor),
        _var(TORCHJOB_AUTOTUNE, "true" if dl.autotune else "false"),
        _var(TORCHJOB_AUTOTUNE_SECONDS, dl.autotune_seconds),
        cpu,
        _var(TORCHJOB_METRICS_PORT, job.spec.metrics.port),
        _var(TORCHJOB_CHECKPOINT_DIR, job.spec.checkpoint.dir),
        *_gpu_memory_fraction(job),
    ]


def _gpu_memory_fraction(job: TrainingJob) -> list[EnvVar]:
    fraction = job.spec.resources.gpu_memory_fraction
    return [] if fraction is None else [_var(TORCHJOB_CUDA_MEMORY_FRACTION, fraction)]
