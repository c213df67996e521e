"""Render a TrainingJob into local node plans: the pod's env, with cluster-only values made local.

The env comes from the operator's own renderers (`torchrun_env`, `trainer_env`), so a local run gets
what a pod gets. Only what must differ on one machine is changed: the rendezvous host is 127.0.0.1,
ports are free ones, downward-API values become plain values, and paths live under the run dir.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torchjob_core import constants, quantity
from torchjob_core.failure_policy import RestartPolicy
from torchjob_core.render import env as renv
from torchjob_core.render import meta, pods
from torchjob_core.spec import TrainingJob

from torchjob_cli.localrun import NodePlan
from torchjob_cli.progress import RANK_PREFIX_TEMPLATE

LOCALHOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Ports:
    master: int
    rdzv: int
    metrics_base: int  # node n, local rank r serves on metrics_base + n * procs_per_node + r; 0 = off


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def metrics_base(preferred: int, count: int) -> int:
    """`count` consecutive free ports, starting at `preferred` if they are all free."""
    if preferred == 0:
        return 0
    for _ in range(50):
        if preferred + count <= 65535 and all(_port_free(preferred + i) for i in range(count)):
            return preferred
        preferred = free_port()
    raise RuntimeError(f"no {count} consecutive free ports for the metrics endpoints")


def choose_ports(job: TrainingJob) -> Ports:
    total = job.spec.nodes * job.nproc_per_node
    return Ports(
        master=free_port(), rdzv=free_port(), metrics_base=metrics_base(job.spec.metrics.port, total)
    )


def metrics_urls(job: TrainingJob, ports: Ports) -> dict[int, str]:
    """node * procs + local rank -> its /metrics URL: the global rank of a static gang (node-major)."""
    if ports.metrics_base == 0:
        return {}
    total = job.spec.nodes * job.nproc_per_node
    return {r: f"http://{LOCALHOST}:{ports.metrics_base + r}/metrics" for r in range(total)}


def resolve_env(entries: Iterable[Mapping[str, Any]], *, pod_name: str, namespace: str) -> dict[str, str]:
    """Plain values for a pod env list; downward-API references become what the pod would read."""
    out: dict[str, str] = {}
    for entry in entries:
        name = str(entry["name"])
        if entry.get("value") is not None:
            out[name] = str(entry["value"])
            continue
        field = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.name":
            out[name] = pod_name
        elif field == "metadata.namespace":
            out[name] = namespace
        elif field in ("status.podIP", "status.hostIP"):
            out[name] = LOCALHOST
        elif field == "spec.nodeName":
            out[name] = socket.gethostname()
        # Secrets, config maps and resource references have no local meaning: left unset.
    return out


def launcher_argv(job: TrainingJob, bin_dir: Path) -> list[str]:
    """The pod's container command and args, with the launcher taken from this Python environment."""
    head, *rest = pods.launcher_command(job)
    exe = bin_dir / head
    if exe.exists():
        first = [str(exe)]
    elif head == constants.LAUNCHER_COMMAND:
        first = [sys.executable, "-m", "torchjob_trainer.launch"]
    else:
        first = [sys.executable, "-m", "torch.distributed.run"]
    return [*first, *rest, *job.spec.args]


def cpu_limit(job: TrainingJob) -> str:
    """Whole cores, rounded up, as the downward API gives a pod; the host's count without a limit."""
    limit = job.spec.resources.limits.get("cpu")
    if limit is None:
        return str(os.cpu_count() or 1)
    return str(max(1, math.ceil(quantity.parse(str(limit)))))


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """This shell's env without torchrun/torchjob settings, which the plan sets itself."""
    return {k: v for k, v in environ.items() if not k.startswith(("PET_", "TORCHJOB_", "TORCHELASTIC_"))}


def node_env(
    job: TrainingJob,
    node_rank: int,
    ports: Ports,
    run_dir: Path,
    *,
    attempt: int,
    environ: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of node `node_rank`'s agent process."""
    pod_name = meta.pod_name(job, node_rank, attempt)
    env = base_env(environ)
    # This environment's bin dir first, so `torchjob-train` and friends resolve to it.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    pod_env = [
        *renv.torchrun_env(
            job, node_rank, master_addr=LOCALHOST, master_port=ports.master, rdzv_port=ports.rdzv
        ),
        *renv.trainer_env(job, cpu_limit=cpu_limit(job)),
        *renv.preset_env(job),  # before the user's env, which resolve_env lets win
        *job.spec.env,
    ]
    env.update(resolve_env(pod_env, pod_name=pod_name, namespace=job.namespace))
    metrics_port = ports.metrics_base + node_rank * job.nproc_per_node if ports.metrics_base else 0
    env.update(
        {
            # Every worker line reaches the console with its rank; the agent's own lines carry none.
            "PET_TEE": "3",
            "PET_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE.format(node=node_rank),
            "PET_LOG_DIR": str(run_dir / "torchrun" / f"node-{node_rank}"),
            "PYTHONUNBUFFERED": "1",
            "TORCHJOB_METRICS_PORT": str(metrics_port),
            "TORCHJOB_CHECKPOINT_DIR": str(run_dir / "checkpoints"),
            "TORCHJOB_SUMMARY_FILE": str(summary_file(run_dir, node_rank)),
        }
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def summary_file(run_dir: Path, node_rank: int) -> Path:
    return run_dir / f"summary-node-{node_rank}.json"


def node_plans(
    job: TrainingJob, ports: Ports, run_dir: Path, *, attempt: int, environ: Mapping[str, str]
) -> list[NodePlan]:
    argv = launcher_argv(job, Path(sys.executable).parent)
    return [
        NodePlan(
            node_rank=n,
            argv=argv,
            env=node_env(job, n, ports, run_dir, attempt=attempt, environ=environ),
            cwd=Path.cwd(),
            log_file=run_dir / f"node-{n}.log",
        )
        for n in range(job.spec.nodes)
    ]


def policy(job: TrainingJob) -> RestartPolicy:
    return RestartPolicy.of(job)


def run_dir_for(job: TrainingJob, workdir: Path | None) -> Path:
    return workdir if workdir is not None else Path.cwd() / ".torchjob" / "runs" / job.name


def fresh_run_dir(path: Path) -> None:
    """Logs and summaries are per run; checkpoints survive so a rerun can resume."""
    path.mkdir(parents=True, exist_ok=True)
    for old in [*path.glob("node-*.log"), *path.glob("summary-node-*")]:
        old.unlink()
    shutil.rmtree(path / "torchrun", ignore_errors=True)
    (path / "checkpoints").mkdir(exist_ok=True)
