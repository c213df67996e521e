"""Apply -> pods + Service -> KWOK runs them -> Succeeded, and the scheduling/Pending paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.kubectl import Kubectl
from harness.polling import eventually

from .conftest import Jobs, OperatorProcess


def conditions(st: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in st.get("conditions", [])}


def test_apply_then_success(operator: OperatorProcess, jobs: Jobs) -> None:
    # Checkpoints on a node path, not an emptyDir: the phase conditions below are then all there is
    # (test_operator_storage.py covers the CheckpointsEphemeral condition of a job without one).
    ckpt = {"volumes": [{"name": "ckpt", "hostPath": {"path": "/tmp/ckpt"}}]}
    ckpt["volumeMounts"] = [{"name": "ckpt", "mountPath": "/checkpoints"}]
    jobs.create("ok", nodes=2, gpus=4, **ckpt)
    st = jobs.wait_phase("ok", "Running")
    assert st["nodes"] == {"total": 2, "pending": 0, "running": 2, "succeeded": 0, "failed": 0}
    assert st["nodesReady"] == "2/2" and st["attempt"] == 0 and st["observedGeneration"] == 1
    assert st["startTime"] and st["runningTime"]

    pods = jobs.pods("ok")
    assert [p.metadata.name for p in pods] == ["ok-node-0-r0", "ok-node-1-r0"]
    for pod in pods:
        assert pod.spec.node_name.startswith("gpu-node-")
        assert pod.spec.hostname.startswith("ok-node-") and pod.spec.subdomain == "ok"
        trainer = pod.spec.containers[0]
        assert trainer.name == "trainer"
        assert trainer.resources.limits["nvidia.com/gpu"] == "4"
        shm = next(v for v in pod.spec.volumes if v.name == "dshm")
        assert shm.empty_dir.medium == "Memory"
        assert any(m.mount_path == "/dev/shm" for m in trainer.volume_mounts)
        assert pod.metadata.owner_references[0].kind == "TrainingJob"
    svc = jobs.core.read_namespaced_service("ok", jobs.ns)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses

    for pod in pods:
        jobs.exit(pod.metadata.name, 0)
    st = jobs.wait_phase("ok", "Succeeded")
    assert conditions(st) == {
        "Created": "True",
        "Pending": "False",
        "Running": "False",
        "Succeeded": "True",
    } or (conditions(st) == {"Created": "True", "Running": "False", "Succeeded": "True"})
    assert st["nodes"]["succeeded"] == 2 and st["completionTime"]
    assert st["reason"] == "JobSucceeded"
    events = eventually(lambda: (e := jobs.events("ok")) and "JobSucceeded" in e and e, 20, "events")
    assert {"PodsCreated", "AllRanksRunning", "JobSucceeded"} <= set(events)
    text = operator.metrics()
    assert "torchjob_operator_pods_created_total 2.0" in text
    assert 'torchjob_operator_jobs{phase="Succeeded"} 1.0' in text
    assert "torchjob_operator_submit_to_running_seconds_count 1.0" in text
    finished = "torchjob_operator_jobs_finished_total"
    assert f'{finished}{{namespace="{jobs.ns}",outcome="Succeeded"}} 1.0' in text
    assert f'{finished}{{namespace="{jobs.ns}",outcome="Failed"}} 0.0' in text
    assert 'torchjob_operator_api_requests_total{verb="create"}' in text


def test_not_enough_gpus_is_pending_unschedulable(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("big", nodes=2, gpus=16)
    st = jobs.wait(
        "big",
        lambda s: s.get("phase") == "Pending" and s.get("reason") == "Unschedulable",
        "Pending/Unschedulable",
    )
    assert "Insufficient nvidia.com/gpu" in st["message"]
    assert conditions(st)["Pending"] == "True"


def test_deleting_the_job_garbage_collects_children(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("gc", nodes=2)
    jobs.wait_phase("gc", "Running")
    jobs.delete("gc")
    eventually(lambda: not jobs.exists("gc"), 60, "job gone")
    eventually(lambda: not jobs.pods("gc"), 60, "pods garbage-collected")

    def service_gone() -> bool:
        return not [s for s in jobs.core.list_namespaced_service(jobs.ns).items if s.metadata.name == "gc"]

    eventually(service_gone, 60, "service garbage-collected")


def deleted_while_stopped(start_operator: Callable[..., OperatorProcess], jobs: Jobs, name: str) -> None:
    """A running job deleted while no operator runs: Kopf's finalizer holds it, Terminating, pods kept."""
    op = start_operator()
    jobs.create(name, nodes=2)
    jobs.wait_phase(name, "Running")
    op.stop()
    jobs.delete(name)
    assert jobs.get(name)["metadata"]["deletionTimestamp"]
    assert len(jobs.pods(name)) == 2


def test_a_job_deleted_while_the_operator_is_down_goes_when_it_is_back(
    start_operator: Callable[..., OperatorProcess], jobs: Jobs
) -> None:
    deleted_while_stopped(start_operator, jobs, "away")
    start_operator()
    eventually(lambda: not jobs.exists("away"), 60, "the job released by the restarted operator")
    eventually(lambda: not jobs.pods("away"), 60, "pods garbage-collected")


def test_with_the_operator_uninstalled_removing_the_finalizer_deletes_the_job_and_its_pods(
    start_operator: Callable[..., OperatorProcess], jobs: Jobs, kubectl: Kubectl
) -> None:
    """The recovery docs/install.md gives for jobs left behind by an uninstalled operator."""
    deleted_while_stopped(start_operator, jobs, "left")
    kubectl("patch", "tj", "left", "-n", jobs.ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    eventually(lambda: not jobs.exists("left"), 30, "the job deleted")
    eventually(lambda: not jobs.pods("left"), 60, "pods garbage-collected")


def test_gang_without_a_gang_scheduler_starts_no_pod(operator: OperatorProcess, jobs: Jobs) -> None:
    # This control plane has no Volcano: the PodGroup cannot be created, so no pod may start piecemeal.
    jobs.create("gang", nodes=3, gpus=8, scheduling={"gang": True})
    st = jobs.wait(
        "gang", lambda s: s.get("reason") == "GangSchedulerMissing", "Pending/GangSchedulerMissing"
    )
    assert st["phase"] == "Pending" and "podgroups" in st["message"]
    assert jobs.pods("gang") == []


def test_elastic_job_succeeds_with_its_first_node(operator: OperatorProcess, jobs: Jobs) -> None:
    # An init container and a sidecar from the template: both get the node's identity env.
    fetch = {"name": "fetch", "image": "busybox", "env": [{"name": "BUCKET", "value": "b"}]}
    template = {"spec": {"initContainers": [fetch], "containers": [{"name": "logs", "image": "fluent-bit"}]}}
    jobs.create("elastic", nodes=2, elastic={"minNodes": 1, "maxNodes": 3}, template=template)
    jobs.wait_phase("elastic", "Running")
    pod = jobs.pods("elastic")[1]
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["PET_NNODES"] == "1:3"
    assert env["PET_RDZV_CONF"] == "is_host=0,last_call_timeout=5,join_timeout=600"
    identity = {
        "TORCHJOB_JOB_NAME": "elastic",
        "TORCHJOB_NAMESPACE": jobs.ns,
        "TORCHJOB_NODE_INDEX": "1",
        "TORCHJOB_NUM_NODES": "2",
        "TORCHJOB_MASTER_ADDR": f"elastic-node-0.elastic.{jobs.ns}.svc",
        "TORCHJOB_MASTER_PORT": "29400",
    }
    (init,) = pod.spec.init_containers
    sidecar = next(c for c in pod.spec.containers if c.name == "logs")
    assert {e.name: e.value for e in init.env} == {**identity, "BUCKET": "b"}
    assert {e.name: e.value for e in sidecar.env} == identity
    assert {k: env[k] for k in identity} == identity
    jobs.exit("elastic-node-0-r0", 0)
    st = jobs.wait_phase("elastic", "Succeeded")
    assert st["reason"] == "JobSucceeded"
    jobs.wait_pods("elastic", {"elastic-node-0-r0": "Succeeded"})  # cleanPodPolicy Running
