"""Live progress through the real API server: the operator reads a real trainer's rank 0 metrics and
writes status.progress, which `kubectl get tj -o wide` and `torchjob get -o wide` show.

The operator runs as a ServiceAccount holding exactly the chart's namespaced Role: reading a pod's
metrics over its IP needs no API verb. Its pod lands on host-node-0 (harness.hostnode), where the test
runs the pod's own trainer container as a local process listening on the pod's (this host's) address.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.controlplane import ControlPlane, service_account_kubeconfig
from harness.hostnode import HOST_NODE, TOLERATION, HostPod
from harness.kubectl import Kubectl
from harness.polling import eventually
from harness.ports import free_port
from kubernetes import client
from torchjob_cli.main import main

from .conftest import Jobs, OperatorProcess
from .test_operator_rbac import grant

ON_HOST_NODE = {"nodeSelector": {"kubernetes.io/hostname": HOST_NODE}, "tolerations": [TOLERATION]}
STEPS = 900
READ_EVERY_S = 2


def running_pod(jobs: Jobs, job: str, host_ip: str) -> Any:
    def probe() -> Any:
        return next((p for p in jobs.pods(job) if p.status.phase == "Running"), None)

    pod = eventually(probe, 60, f"{job} running on {HOST_NODE}", interval_s=0.2)
    assert pod.status.pod_ip == host_ip
    return pod


def wide_row(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    lines = kubectl("get", "tj", name, "-n", namespace, "-o", "wide").stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert header == ["NAME", "PHASE", "NODES", "RESTARTS", "PROGRESS", "ETA", "SAMPLES/S", "DATA-WAIT",
                      "AGE", "REASON", "FAILURE"]  # fmt: skip
    # A column without a value prints blank: only the last one (FAILURE, no failure here) may be missing.
    assert len(row) >= len(header) - 1, lines
    return dict(zip(header, row, strict=False))


def test_status_progress_from_a_real_trainer_advances_and_shows_in_get(  # noqa: PLR0917 (fixtures)
    host_node: str,
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
    kubectl: Kubectl,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: Any,
) -> None:
    with grant(kube, namespace, "torchjob-operator", "namespaced"):
        kubeconfig = service_account_kubeconfig(control_plane, namespace, "torchjob-operator")
        args = ("--standalone", "--progress-interval-seconds", str(READ_EVERY_S))
        operator = start_operator(kubeconfig=kubeconfig, args=args)
        port = free_port()
        trainer = ["--model", "mlp", "--dataset", "synthetic", "--dataset-size", "64000", "--epochs", "1"]
        trainer += ["--steps-per-epoch", str(STEPS), "--batch-size", "16", "--sample-cost-us", "2000"]
        trainer += ["--log-every", "10"]
        jobs.create("live", nodes=1, backend="gloo", args=trainer, metrics={"port": port},
                    dataLoader={"numWorkers": 0}, **ON_HOST_NODE)  # fmt: skip
        pod = running_pod(jobs, "live", host_node)

        with HostPod(kube, pod, tmp_path) as rank:
            first = jobs.wait("live", lambda st: (st.get("progress") or {}).get("step", 0) > 0,
                              "a first status.progress", timeout=180)["progress"]  # fmt: skip
            assert first["totalSteps"] == STEPS and first["pod"] == "live-node-0-r0"
            assert first["steps"] == f"{first['step']}/{STEPS}" and first["samplesPerSecond"] >= 0
            assert 0 <= first["dataWaitRatio"] <= 1 and first["readTime"].endswith("Z")

            def advanced(st: dict[str, Any]) -> bool:
                p = st.get("progress") or {}
                return p.get("step", 0) > first["step"] and p.get("readTime") != first["readTime"]

            later = jobs.wait("live", advanced, "status.progress advancing", timeout=60)["progress"]
            eta = jobs.wait("live", lambda st: "eta" in (st.get("progress") or {}), "an ETA", 60)["progress"]
            assert re.fullmatch(r"(\d+m)?\d+s", eta["eta"]) and eta["etaSeconds"] >= 0
            assert later["readTime"] > first["readTime"]

            # kubectl's printer columns while it runs.
            row = eventually(lambda: (r := wide_row(kubectl, namespace, "live"))["ETA"].endswith("s") and r,
                             60, "kubectl get -o wide with an ETA", interval_s=0.5)  # fmt: skip
            step, total = row["PROGRESS"].split("/")
            assert int(total) == STEPS and 0 < int(step) <= STEPS
            assert float(row["SAMPLES/S"]) > 0 and 0 <= float(row["DATA-WAIT"]) <= 1
            assert re.fullmatch(r"(\d+m)?\d+s", row["ETA"])
            plain = kubectl("get", "tj", "-n", namespace).stdout.splitlines()[0].split()
            assert plain == ["NAME", "PHASE", "NODES", "RESTARTS", "PROGRESS", "ETA", "AGE", "REASON"]

            # torchjob get shows the same figures.
            monkeypatch.setenv("COLUMNS", "200")
            capsys.readouterr()
            kubeconfig_args = ["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
            assert main(["get", "live", "-o", "wide", *kubeconfig_args]) == 0
            header, cells = capsys.readouterr().out.strip().splitlines()
            shown = dict(zip(header.split(), cells.split(), strict=True))
            assert re.fullmatch(rf"\d+/{STEPS}", shown["PROGRESS"]) and float(shown["SAMPLES/S"]) > 0
            assert shown["ETA"] != "" and float(shown["DATA-WAIT"]) <= 1

            assert rank.wait(timeout=300) == 0, rank.output()[-3000:]
        done = jobs.wait_phase("live", "Succeeded", timeout=60)
        # The last figures stay; an ETA means nothing once the job stopped running.
        assert done["progress"]["step"] >= later["step"] and "eta" not in done["progress"]
        reads = re.search(r'torchjob_operator_progress_reads_total\{result="ok"\} (\S+)', operator.metrics())
        assert reads is not None and float(reads[1]) >= 3
