"""Kueue's preemption on a real trainer: a higher-priority job evicts a running one; Kueue's graceful
delete reaches the trainer as SIGTERM, it writes its checkpoint and exits 143; once re-admitted, the
job's new pod resumes at that global step and Succeeds.

Kueue's flavor sends both jobs' pods to host-node-0 (harness.hostnode), where the test runs the low job's
trainer container as a local process; the checkpoint folder is the test's work directory, which both
attempts share as they would share a PersistentVolume. The high job's pod is ended by KWOK alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.hostnode import HOST_NODE, TOLERATION, HostPod
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, MakeQueues, OperatorProcess
from .test_progress_host_pods import running_pod

QUEUE = "host"
FLAVOR = {"nodeLabels": {"kubernetes.io/hostname": HOST_NODE}, "tolerations": [TOLERATION]}
JOB_CPUS = 1  # one pod of 1 CPU: the ClusterQueue holds one job at a time
STEPS = 400
WRITTEN = re.compile(r"checkpoint \S*ckpt-(\d+)\.pt \(([^)]*)\) written")
RESUMED = re.compile(r"resumed at epoch \d+, step \d+ of the epoch, global step (\d+)")
STEP = re.compile(r'"step": (\d+)')


def trainer_args() -> list[str]:
    args = ["--model", "mlp", "--dataset", "synthetic", "--dataset-size", "64000", "--epochs", "1"]
    args += ["--steps-per-epoch", str(STEPS), "--batch-size", "16", "--sample-cost-us", "2000"]
    return [*args, "--log-every", "5", "--checkpoint-every", "100000"]  # only the SIGTERM checkpoint


def create(jobs: Jobs, name: str, priority: str) -> None:
    jobs.create(name, nodes=1, backend="gloo", args=trainer_args(), dataLoader={"numWorkers": 0},
                scheduling={"queue": QUEUE}, priorityClassName=priority)  # fmt: skip


def test_preempted_job_checkpoints_on_sigterm_and_resumes_when_readmitted(  # noqa: PLR0917 (fixtures)
    host_node: str,
    kube: client.ApiClient,
    jobs: Jobs,
    make_queues: MakeQueues,
    priorities: tuple[str, str],
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    make_queues(QUEUE, FLAVOR, JOB_CPUS)
    low, high = priorities
    create(jobs, "low", low)
    first_pod = running_pod(jobs, "low", host_node)
    with HostPod(kube, first_pod, tmp_path) as first:
        eventually(lambda: [int(s) for s in STEP.findall(first.output()) if int(s) >= 20], 180,
                   "the low job's trainer past step 20", interval_s=0.5)  # fmt: skip
        create(jobs, "high", high)
        code = first.exit_on_delete(timeout=120)
        first_log = first.output()
    assert code == 143, first_log[-3000:]
    written = [(int(step), reason) for step, reason in WRITTEN.findall(first_log)]
    assert written and written[-1][1] == "preemption", written
    stopped_at = written[-1][0]
    assert 20 <= stopped_at < STEPS

    # Its status says Kueue preempted it; it waits, queued, while the high job runs.
    jobs.wait("low", lambda st: st.get("disruptions", 0) >= 1, "disrupted by Kueue's preemption", timeout=60)
    disrupted = eventually(lambda: jobs.event_messages("low", "PodDisrupted"), 30, "the PodDisrupted Event")
    assert "WorkloadEvictedDueToPreempted" in disrupted[0], disrupted
    jobs.wait_phase("high", "Running", timeout=90)
    queued = jobs.wait("low", lambda st: st.get("reason") == "QueuedByKueue", "queued again", timeout=60)
    assert queued["restartCount"] - queued["disruptions"] == 0  # not counted against backoffLimit
    for pod in jobs.pods("high"):
        jobs.exit(pod.metadata.name, 0)
    jobs.wait_phase("high", "Succeeded", timeout=60)

    # Re-admitted: the new pod resumes from the SIGTERM checkpoint and runs only the remaining steps.
    second_pod: Any = running_pod(jobs, "low", host_node)
    assert second_pod.metadata.name != first_pod.metadata.name
    with HostPod(kube, second_pod, tmp_path) as second:
        assert second.wait(timeout=300) == 0, second.output()[-3000:]
        resumed = [int(g) for g in RESUMED.findall(second.output())]
    assert resumed == [stopped_at], (resumed, stopped_at)
    done = jobs.wait_phase("low", "Succeeded", timeout=60)
    assert done["restartCount"] - done["disruptions"] == 0
