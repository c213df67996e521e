"""Disruptions on real pods, one job run: the active operator pod is deleted (the standby takes over, with
no duplicate or orphan pod), then a trainer pod is deleted (the gang restarts, resumes from the newest
checkpoint on a PersistentVolume and Succeeds)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from e2e import jobs
from e2e.support import Cluster, Kubectl, progress
from harness.polling import eventually

NAME = "disrupted"
CHECKPOINT_EVERY = 10
WRITTEN = re.compile(r"checkpoint \S*ckpt-(\d+)\.pt \(([^)]*)\) written")
RESUMED = re.compile(r"resumed at epoch \d+, step \d+ of the epoch, global step (\d+)")


def checkpoint_volume(cluster: Cluster, kubectl: Kubectl, namespace: str) -> str:
    """A PVC that outlives pods. On the real node it binds a static local PV (a folder on this machine:
    restricted Pod Security forbids hostPath in the pod, not a PersistentVolume); elsewhere the cluster's
    default StorageClass provides one."""
    claim: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "checkpoints", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip
    if cluster.node_cluster is not None:
        folder = cluster.node_cluster.node.dir / "pv" / namespace
        folder.mkdir(parents=True)
        folder.chmod(0o777)  # the trainer runs as uid 10001; local volumes keep the folder's owner
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"checkpoints-{namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "torchjob-e2e-local",
                "local": {"path": str(folder)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-0"]}]}]}},
            },
        }  # fmt: skip
        kubectl("apply", "-f", "-", input=yaml.safe_dump(pv))
        claim["spec"] |= {"storageClassName": "torchjob-e2e-local", "volumeName": pv["metadata"]["name"]}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(claim))
    return "checkpoints"


class LogFollower:
    """`kubectl logs -f` of one pod into memory: the logs of a pod the operator deletes on restart."""

    def __init__(self, kubectl: Kubectl, namespace: str, pod: str) -> None:
        argv = [kubectl.binary, *([f"--kubeconfig={kubectl.kubeconfig}"] if kubectl.kubeconfig else []),
                "logs", "-f", "-n", namespace, pod, "-c", "trainer"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def close(self, timeout: float = 30) -> str:
        self._thread.join(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return "".join(self.lines)


@pytest.fixture(scope="module")
def disrupted_job(cluster: Cluster, kubectl: Kubectl, module_namespace: str) -> Iterator[dict[str, Any]]:
    claim = checkpoint_volume(cluster, kubectl, module_namespace)
    # About 3 minutes of training on 2 cores: it must outlast the operator failover (up to a minute or two)
    # and still be mid-run when a trainer pod is deleted after it.
    job = jobs.example(name=NAME, extra_args=[
        *jobs.LONG_RUN, "--steps-per-epoch", "1200", "--checkpoint-every", str(CHECKPOINT_EVERY),
    ])  # fmt: skip
    job["spec"]["runPolicy"]["backoffSeconds"] = 1
    job["spec"]["template"] = {"spec": {
        "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": "trainer", "volumeMounts": [{"name": "ckpt", "mountPath": "/checkpoints"}]}],
    }}  # fmt: skip
    jobs.apply(kubectl, job, module_namespace)
    jobs.wait_for_phase(kubectl, NAME, module_namespace, "Running")
    yield job


def _active_operator(kubectl: Kubectl, namespace: str) -> tuple[str, set[str]]:
    """The replica Kopf lets work (highest priority in the KopfPeering status) and the pods that exist."""
    # The chart's operator watches every namespace, so its peering object is cluster-scoped.
    found = (
        kubectl.json("get", "clusterkopfpeerings")["items"]
        or kubectl.json("get", "kopfpeerings", "-n", namespace)["items"]
    )
    (peering,) = found
    peers = {pid: info for pid, info in (peering.get("status") or {}).items() if isinstance(info, dict)}
    pods = _operator_pods(kubectl, namespace)
    live = {pid: info for pid, info in peers.items() if any(pid.startswith(p) for p in pods)}
    assert live, f"no live peer among {sorted(peers)} for pods {sorted(pods)}"
    top = max(live, key=lambda pid: live[pid].get("priority", 0))
    return next(p for p in pods if top.startswith(p)), pods


def _pod(kubectl: Kubectl, namespace: str, index: int, attempt: int) -> str:
    """The name of node `index`'s pod in gang attempt `attempt` (names carry the attempt: `-r<n>`)."""
    for p in jobs.pods(kubectl, NAME, namespace):
        labels = p["metadata"]["labels"]
        if labels["torchjob.dev/node-index"] == str(index) and labels["torchjob.dev/attempt"] == str(attempt):
            return str(p["metadata"]["name"])
    raise AssertionError(f"no pod for node {index} in attempt {attempt}")


def _job_pods(kubectl: Kubectl, namespace: str) -> list[tuple[str, str, str]]:
    return [(p["metadata"]["name"], p["metadata"]["uid"], p["metadata"]["labels"]["torchjob.dev/attempt"])
            for p in jobs.pods(kubectl, NAME, namespace)]  # fmt: skip


def _service(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    items = kubectl.json("get", "services", "-n", namespace, "-l", f"{jobs.JOB_LABEL}={NAME}")["items"]
    return items[0] if items else None


def test_active_operator_deleted_standby_takes_over(
    cluster: Cluster, kubectl: Kubectl, module_namespace: str, disrupted_job: dict[str, Any]
) -> None:
    ns = cluster.operator_namespace
    before = _job_pods(kubectl, module_namespace)
    assert len(before) == disrupted_job["spec"]["nodes"], before
    active, replicas = _active_operator(kubectl, ns)
    (standby,) = replicas - {active}
    progress(f"deleting the active operator pod {active}; standby {standby}")
    kubectl("delete", "pod", "-n", ns, active, "--wait=true", "--timeout=120s", timeout=150)
    # Who works next is the highest live priority: the standby, or the Deployment's replacement pod if it
    # drew a higher one (each replica draws its own). Either way a replica must act on the job, so the
    # proof is behaviour: a child deleted by hand comes back, and the running pods are adopted as they are.
    service = _service(kubectl, module_namespace)
    assert service is not None, f"no headless Service for {NAME}"
    kubectl("delete", "service", "-n", module_namespace, service["metadata"]["name"])

    def repaired() -> dict[str, Any] | None:
        found = _service(kubectl, module_namespace)
        return found if found and found["metadata"]["uid"] != service["metadata"]["uid"] else None

    try:
        eventually(repaired, 180, "a working replica to repair the deleted headless Service", 3)
    except TimeoutError as exc:
        logs = {
            pod: kubectl("logs", "-n", ns, pod, "--tail=30", check=False).stdout
            for pod in _operator_pods(kubectl, ns)
        }
        raise AssertionError(f"{exc}; operator logs:\n{logs}") from None
    now_active, _ = _active_operator(kubectl, ns)
    progress(f"{now_active} works now (standby was {standby})")
    # The new leader adopts the running pods: same pods (uids), same attempt, none added.
    status = jobs.wait_for_phase(kubectl, NAME, module_namespace, "Running", timeout=60)
    assert status.get("attempt", 0) == 0, status
    assert _job_pods(kubectl, module_namespace) == before


def _operator_pods(kubectl: Kubectl, namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in kubectl.json(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]}  # fmt: skip


def test_trainer_pod_deleted_gang_restarts_and_resumes(
    kubectl: Kubectl, module_namespace: str, disrupted_job: dict[str, Any]
) -> None:
    _, status = jobs.status_line(kubectl, NAME, module_namespace)
    attempt = int(status.get("attempt", 0))
    node0 = _pod(kubectl, module_namespace, 0, attempt)

    def checkpointed() -> bool:
        logs = kubectl("logs", "-n", module_namespace, node0, "-c", "trainer", check=False).stdout
        return bool(WRITTEN.search(logs))

    eventually(checkpointed, 300, "a first checkpoint", 3)
    follower = LogFollower(kubectl, module_namespace, node0)
    jobs.running_pods(kubectl, NAME, module_namespace, disrupted_job["spec"]["nodes"])  # still mid-run
    node1 = _pod(kubectl, module_namespace, 1, attempt)
    progress(f"deleting trainer pod {node1}")
    kubectl("delete", "pod", "-n", module_namespace, node1, "--wait=false")

    def restarted() -> dict[str, Any] | None:
        _, status = jobs.status_line(kubectl, NAME, module_namespace)
        return status if status.get("attempt", 0) > attempt else None

    status = eventually(restarted, 180, "the gang restart", 3)
    assert status.get("disruptions", 0) >= 1, status
    old_logs = follower.close()
    written = [int(step) for step, _ in WRITTEN.findall(old_logs)]
    assert written, f"attempt {attempt} wrote no checkpoint:\n{old_logs[-3000:]}"
    final = jobs.wait_for_phase(kubectl, NAME, module_namespace, "Succeeded")
    # Exactly one pod per node in the last attempt; the first attempt's pods were deleted or are Failed.
    last = [p for p in _job_pods(kubectl, module_namespace) if p[2] == str(final["attempt"])]
    assert len(last) == disrupted_job["spec"]["nodes"], last
    new_node0 = _pod(kubectl, module_namespace, 0, final["attempt"])
    new_logs = kubectl("logs", "-n", module_namespace, new_node0, "-c", "trainer").stdout
    resumed = [int(g) for g in RESUMED.findall(new_logs)]
    progress(f"attempt {attempt} checkpoints {written[-3:]}, attempt {final['attempt']} resumed at {resumed}")
    assert resumed and resumed[0] == max(written), (resumed, written)
