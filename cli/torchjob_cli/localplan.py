"""Render a TrainingJob into local node plans: the pod the operator would create, run as a process.

Each node's argv and env come from `render_pod` (its trainer container's command, args and env, in
their order), so a local run is the cluster's run by construction. Only what a process cannot get
from Kubernetes is substituted, each in one place here: the rendezvous is 127.0.0.1 at free ports and
every node gets its own metrics ports (`local_values`), the checkpoint volume is a directory of the
run dir, downward-API references and `$(VAR)` (in env values, command and args) are resolved as the
kubelet does (`resolve_env`, `container_argv`), and torchrun's log settings and the summary file are
added (`local_only_env`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torchjob_core import constants, quantity
from torchjob_core.failure_policy import RestartPolicy
from torchjob_core.render import env as renv
from torchjob_core.render import pods
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
    base = preferred
    for _ in range(50):
        if base + count <= 65535 and all(_port_free(base + i) for i in range(count)):
            return base
        base = free_port()
    raise RuntimeError(
        f"no {count} consecutive free ports for the ranks' metrics endpoints (from spec.metrics.port "
        f"{preferred}, then 50 others); free some, or set spec.metrics.port: 0 to run without them"
    )


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


def trainer_container(pod: Mapping[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    return next(c for c in containers if c["name"] == constants.CONTAINER_NAME)


def _container(job: TrainingJob, node_rank: int, attempt: int) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = pods.render_pod(job, node_rank, attempt)
    return pod, trainer_container(pod)


# `$(VAR)` and the `$$` escape, as Kubernetes expands env values, args and commands.
_REFERENCE = re.compile(r"\$(?:\$|\(([^)]*)\))")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: a defined VAR becomes its value, an undefined one stays as
    written, and `$$` is a literal `$` (so `$$(VAR)` reads `$(VAR)`)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return "$" if name is None else defined.get(name, match.group(0))

    return _REFERENCE.sub(one, value)


def _field_value(field: str | None, *, pod_name: str, namespace: str) -> str | None:
    if field == "metadata.name":
        return pod_name
    if field == "metadata.namespace":
        return namespace
    if field in ("status.podIP", "status.hostIP"):
        return LOCALHOST
    if field == "spec.nodeName":
        return socket.gethostname()
    return None


def _resource_value(ref: Mapping[str, Any], resources: Mapping[str, Any]) -> str | None:
    """`limits.cpu` and the like as the kubelet gives them: rounded up in units of the divisor. A CPU
    limit the container lacks is this host's CPU count (the kubelet gives the node's allocatable)."""
    kind, _, resource = str(ref.get("resource") or "").partition(".")
    amount = (resources.get(kind) or {}).get(resource)
    if amount is None and (kind, resource) == ("limits", "cpu"):
        amount = os.cpu_count() or 1
    if amount is None:
        return None
    units = quantity.parse(str(amount)) / quantity.parse(str(ref.get("divisor") or "1"))
    return str(max(1, math.ceil(units)))


def resolve_env(
    entries: Iterable[Mapping[str, Any]],
    *,
    pod_name: str,
    namespace: str,
    resources: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Plain values for a pod env list, as the kubelet computes them: in order, each value's `$(VAR)`
    expanded from the entries before it; field refs (and, given the container's `resources`, resource
    refs) become what the pod would read. Secrets and config maps have no local meaning: left unset."""
    out: dict[str, str] = {}
    for entry in entries:
        name = str(entry["name"])
        value_from = entry.get("valueFrom") or {}
        value: str | None
        if entry.get("value") is not None:
            value = expand(str(entry["value"]), out)
        elif "fieldRef" in value_from:
            value = _field_value(
                value_from["fieldRef"].get("fieldPath"), pod_name=pod_name, namespace=namespace
            )
        elif "resourceFieldRef" in value_from and resources is not None:
            value = _resource_value(value_from["resourceFieldRef"], resources)
        else:
            value = None
        if value is not None:
            out[name] = value
    return out


def container_argv(container: Mapping[str, Any], bin_dir: Path, env: Mapping[str, str]) -> list[str]:
    """The container's command and args, `$(VAR)` expanded from its `env` as the kubelet does, with
    the launcher taken from this Python environment."""
    head, *rest = [expand(str(a), env) for a in [*container["command"], *(container.get("args") or [])]]
    exe = bin_dir / head
    if exe.exists():
        first = [str(exe)]
    elif head == constants.LAUNCHER_COMMAND:
        first = [sys.executable, "-m", "torchjob_trainer.launch"]
    else:
        first = [sys.executable, "-m", "torch.distributed.run"]
    return [*first, *rest]


def launcher_argv(job: TrainingJob, bin_dir: Path) -> list[str]:
    """The pod's container command and args as written (the same on every node), run from here."""
    _, container = _container(job, 0, 0)
    return container_argv(container, bin_dir, {})


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """This shell's env without torchrun/torchjob settings, which the plan sets itself."""
    owned = (*constants.RESERVED_ENV_PREFIXES, "TORCHELASTIC_")  # torchrun's own state, too
    return {k: v for k, v in environ.items() if not k.startswith(owned)}


def local_values(job: TrainingJob, node_rank: int, ports: Ports, run_dir: Path) -> dict[str, str]:
    """The pod env values a process here must not take from the pod, by name: the rendezvous env as
    torchrun_env and node_env render it for 127.0.0.1 and free ports, metrics ports no other node's ranks
    use, and the run dir's checkpoints in place of the pod's volume (shared by the nodes and kept between
    runs, so a rerun resumes)."""
    rendezvous = [
        *renv.torchrun_env(
            job, node_rank, master_addr=LOCALHOST, master_port=ports.master, rdzv_port=ports.rdzv
        ),
        *renv.node_env(job, node_rank, master_addr=LOCALHOST, master_port=ports.master, rdzv_port=ports.rdzv),
    ]
    metrics_port = ports.metrics_base + node_rank * job.nproc_per_node if ports.metrics_base else 0
    return {
        **{str(e["name"]): str(e["value"]) for e in rendezvous},
        renv.TORCHJOB_METRICS_PORT: str(metrics_port),
        renv.TORCHJOB_CHECKPOINT_DIR: str(checkpoint_dir(run_dir)),
    }


def substitute(entries: Iterable[Mapping[str, Any]], values: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """`entries` with each name in `values` given that value, where it stands (the order stays)."""
    return [{"name": e["name"], "value": values[e["name"]]} if e["name"] in values else e for e in entries]


def local_only_env(node_rank: int, run_dir: Path) -> dict[str, str]:
    """What a local agent gets that no pod has: its console prefix, log dir and summary file."""
    return {
        # Every worker line reaches the console with its rank; the agent's own lines carry none.
        "PET_TEE": "3",
        "PET_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX_TEMPLATE.format(node=node_rank),
        "PET_LOG_DIR": str(run_dir / "torchrun" / f"node-{node_rank}"),
        "PYTHONUNBUFFERED": "1",
        renv.TORCHJOB_SUMMARY_FILE: str(summary_file(run_dir, node_rank)),
    }


@dataclasses.dataclass(frozen=True)
class LocalPod:
    """Node `node_rank`'s rendered pod, and its trainer container's env as resolved on this machine."""

    pod: dict[str, Any]
    container: dict[str, Any]
    env: dict[str, str]  # the container's env, substituted and resolved, in the pod's order


def local_pod(job: TrainingJob, node_rank: int, ports: Ports, run_dir: Path, *, attempt: int) -> LocalPod:
    pod, container = _container(job, node_rank, attempt)
    entries = substitute(container.get("env") or [], local_values(job, node_rank, ports, run_dir))
    meta, resources = pod["metadata"], container.get("resources") or {}
    env = resolve_env(entries, pod_name=meta["name"], namespace=meta["namespace"], resources=resources)
    return LocalPod(pod, container, env)


def process_env(local: LocalPod, node_rank: int, run_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The agent process's environment: this shell's, then the pod's, then the local-only settings."""
    env = base_env(environ)
    # This environment's bin dir first, so `torchjob-train` and friends resolve to it.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(local.env)
    env.update(local_only_env(node_rank, run_dir))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def node_env(
    job: TrainingJob,
    node_rank: int,
    ports: Ports,
    run_dir: Path,
    *,
    attempt: int,
    environ: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of node `node_rank`'s agent process: the pod's env, in its order, made local."""
    local = local_pod(job, node_rank, ports, run_dir, attempt=attempt)
    return process_env(local, node_rank, run_dir, environ)


def summary_file(run_dir: Path, node_rank: int) -> Path:
    return run_dir / f"summary-node-{node_rank}.json"


def node_plans(
    job: TrainingJob, ports: Ports, run_dir: Path, *, attempt: int, environ: Mapping[str, str]
) -> list[NodePlan]:
    bin_dir = Path(sys.executable).parent
    plans = []
    for n in range(job.spec.nodes):
        local = local_pod(job, n, ports, run_dir, attempt=attempt)
        plans.append(
            NodePlan(
                node_rank=n,
                argv=container_argv(local.container, bin_dir, local.env),
                env=process_env(local, n, run_dir, environ),
                cwd=Path.cwd(),
                log_file=run_dir / f"node-{n}.log",
            )
        )
    return plans


def policy(job: TrainingJob) -> RestartPolicy:
    return RestartPolicy.of(job)


def run_dir_for(job: TrainingJob, workdir: Path | None) -> Path:
    return workdir if workdir is not None else Path.cwd() / ".torchjob" / "runs" / job.name


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def fresh_run_dir(path: Path, *, keep_checkpoints: bool = True) -> None:
    """Logs and summaries are per run; checkpoints survive so a rerun can resume, unless it starts over."""
    path.mkdir(parents=True, exist_ok=True)
    for old in [*path.glob("node-*.log"), *path.glob("summary-node-*")]:
        old.unlink()
    shutil.rmtree(path / "torchrun", ignore_errors=True)
    if not keep_checkpoints:
        shutil.rmtree(checkpoint_dir(path), ignore_errors=True)
    checkpoint_dir(path).mkdir(exist_ok=True)
