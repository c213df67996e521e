"""`torchjob logs` and `top` through the real API server, reading what real processes wrote.

The operator creates the pods; they land on host-node-0 (harness.hostnode), where the test runs the
pod's own trainer container as local processes. The apiserver then serves their logs from the node's
kubelet endpoint and proxies `top`'s scrapes to the pod IP, exactly the paths a cluster uses.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness.controlplane import ControlPlane
from harness.hostnode import HOST_NODE, TOLERATION, HostPod, PodLog, end_pod
from harness.polling import eventually
from harness.ports import free_port
from kubernetes import client
from torchjob_cli.main import main

from .conftest import Jobs, OperatorProcess

ON_HOST_NODE = {"nodeSelector": {"kubernetes.io/hostname": HOST_NODE}, "tolerations": [TOLERATION]}
Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(
    control_plane: ControlPlane, namespace: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> Cli:
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([*args, "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace])
        return code, capsys.readouterr().out

    return run


def running_pod(jobs: Jobs, job: str, attempt: int, host_ip: str) -> Any:
    def probe() -> Any:
        for pod in jobs.pods(job):
            if pod.metadata.name.endswith(f"-r{attempt}") and pod.status.phase == "Running":
                return pod
        return None

    pod = eventually(probe, 60, f"{job} attempt {attempt} running on {HOST_NODE}", interval_s=0.2)
    assert pod.status.pod_ip == host_ip  # the node's (this host's) address: the proxy can reach it
    return pod


@pytest.mark.usefixtures("operator")
def test_logs_and_top_reach_real_ranks_through_the_api_server(
    host_node: str,
    jobs: Jobs,
    kube: client.ApiClient,
    cli: Cli,
    tmp_path: Path,
) -> None:
    base = free_port(span=2)
    # A few hundred data-bound steps: long enough for `top` to catch both ranks training.
    args = ["--model", "mlp", "--dataset", "synthetic", "--dataset-size", "32000", "--epochs", "1"]
    args += ["--steps-per-epoch", "400", "--batch-size", "16", "--sample-cost-us", "2000"]
    args += ["--log-every", "50"]
    jobs.create(
        "real-ranks",
        nodes=1,
        procsPerNode=2,
        backend="gloo",
        args=args,
        metrics={"port": base},
        dataLoader={"numWorkers": 0},
        **ON_HOST_NODE,
    )
    pod = running_pod(jobs, "real-ranks", 0, host_node)

    with HostPod(kube, pod, tmp_path) as ranks:
        # top: each rank's /metrics through the apiserver's pod proxy, one row per rank.
        def both_ranks_training() -> str | None:
            code, out = cli("top", "real-ranks", "--once")
            rows = [ln.split("│") for ln in out.splitlines() if ln.startswith("│")]
            training = [r for r in rows if len(r) > 4 and r[1].strip() in ("0", "1") and r[4].strip() != "-"]
            return out if code == 0 and len(training) == 2 else None

        table = eventually(both_ranks_training, 180, "`top` rows for ranks 0 and 1", interval_s=1)
        assert "real-ranks" in table

        # logs: the pod's output through the apiserver, each worker line with its node and rank.
        def both_ranks_logged() -> str | None:
            code, out = cli("logs", "real-ranks")
            wanted = ("[node 0 rank 0] ", "[node 0 rank 1] ")
            return out if code == 0 and all(w in out for w in wanted) else None

        out = eventually(both_ranks_logged, 120, "log lines of both ranks", interval_s=1)
        assert "(no logs:" not in out

        assert ranks.wait(timeout=300) == 0, ranks.output()[-3000:]
    jobs.wait_phase("real-ranks", "Succeeded", timeout=60)

    # Following a finished job prints what is there and returns.
    code, out = cli("logs", "real-ranks", "-f", "--tail", "5")
    assert code == 0
    assert out.splitlines()[-1] == "TrainingJob real-ranks Succeeded"
    assert len([ln for ln in out.splitlines() if ln.startswith("[node 0")]) == 5


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def test_logs_follow_crosses_a_gang_restart_and_ends_with_the_job(  # noqa: PLR0917 (fixtures)
    host_node: str,
    operator: OperatorProcess,
    jobs: Jobs,
    kube: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
) -> None:
    # Log sources exist before the pods do (pod names are deterministic), as a kubelet's would.
    first = PodLog(kube, namespace, "gang-logs-node-0-r0", tmp_path / "r0.log")
    second = PodLog(kube, namespace, "gang-logs-node-0-r1", tmp_path / "r1.log")
    first.write("attempt 0 starting")
    jobs.create("gang-logs", nodes=1, runPolicy={"backoffLimit": 2}, **ON_HOST_NODE)
    running_pod(jobs, "gang-logs", 0, host_node)

    torchjob = str(Path(sys.executable).parent / "torchjob")
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig), COLUMNS="200")
    follow = subprocess.Popen(
        [torchjob, "logs", "gang-logs", "-f", "-n", namespace],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(follow.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []

    def saw(text: str) -> Callable[[], bool]:
        def probe() -> bool:
            while not lines.empty():
                seen.append(lines.get())
            return text in seen

        return probe

    try:
        eventually(saw("[node 0] attempt 0 starting"), 60, "attempt 0's first line", interval_s=0.2)
        first.write("attempt 0 killed")
        end_pod(kube, namespace, "gang-logs-node-0-r0", 143)  # retryable: the operator restarts the gang

        running_pod(jobs, "gang-logs", 1, host_node)
        second.write("attempt 1 resumed", "attempt 1 done")
        eventually(saw("[node 0] attempt 1 done"), 60, "attempt 1's lines", interval_s=0.2)
        end_pod(kube, namespace, "gang-logs-node-0-r1", 0)
        jobs.wait_phase("gang-logs", "Succeeded")
        assert follow.wait(timeout=60) == 0
        eventually(saw("TrainingJob gang-logs Succeeded"), 10, "the final line", interval_s=0.2)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(timeout=10)
        reader.join(timeout=10)
        if follow.stdout is not None:
            follow.stdout.close()

    assert seen == [
        "[node 0] attempt 0 starting",
        "[node 0] attempt 0 killed",
        "--- gang attempt 1 ---",
        "[node 0] attempt 1 resumed",
        "[node 0] attempt 1 done",
        "TrainingJob gang-logs Succeeded",
    ]
