"""Deadlines, TTL, cleanPodPolicy, successPolicy and suspend/resume against the real API."""

from __future__ import annotations

from harness.polling import eventually

from .conftest import Jobs, OperatorProcess


def test_active_deadline_fails_the_running_job(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("slow", nodes=1, runPolicy={"activeDeadlineSeconds": 3})
    st = jobs.wait_phase("slow", "Failed", timeout=60)
    assert st["reason"] == "DeadlineExceeded"
    eventually(lambda: not jobs.pods("slow"), 30, "running pod cleaned up")


def test_startup_deadline_fails_a_job_that_never_runs(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("stuck", nodes=1, gpus=64, runPolicy={"startupDeadlineSeconds": 2})
    st = jobs.wait_phase("stuck", "Failed", timeout=60)
    assert st["reason"] == "StartupDeadlineExceeded"
    assert "Unschedulable" in st["message"] or "Insufficient" in st["message"] or "pending" in st["message"]


def test_ttl_deletes_the_finished_job(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("brief", nodes=1, runPolicy={"ttlSecondsAfterFinished": 2})
    jobs.wait_phase("brief", "Running")
    jobs.exit("brief-node-0-r0", 0)
    jobs.wait_phase("brief", "Succeeded")
    eventually(lambda: not jobs.exists("brief"), 60, "job deleted by TTL")
    eventually(lambda: not jobs.pods("brief"), 60, "pods garbage-collected")


def test_clean_pod_policy_none_keeps_every_pod(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("keep", nodes=2, runPolicy={"cleanPodPolicy": "None"})
    jobs.wait_phase("keep", "Running")
    jobs.exit("keep-node-0-r0", 2)
    jobs.wait_phase("keep", "Failed")
    assert jobs.pod_phases("keep") == {"keep-node-0-r0": "Failed", "keep-node-1-r0": "Running"}


def test_clean_pod_policy_all_keeps_only_failed_pods(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("tidy", nodes=3, runPolicy={"cleanPodPolicy": "All"})
    jobs.wait_phase("tidy", "Running")
    jobs.exit("tidy-node-2-r0", 0)
    jobs.wait_pods(
        "tidy", {"tidy-node-0-r0": "Running", "tidy-node-1-r0": "Running", "tidy-node-2-r0": "Succeeded"}
    )
    jobs.exit("tidy-node-0-r0", 3)
    jobs.wait_phase("tidy", "Failed")
    jobs.wait_pods("tidy", {"tidy-node-0-r0": "Failed"})


def test_node0_success_ends_the_job_while_node_1_lingers(operator: OperatorProcess, jobs: Jobs) -> None:
    # Kubeflow's "Master succeeded": node 0 exits 0, node 1 keeps running (a sidecar, a stuck teardown).
    jobs.create("lead", nodes=2, runPolicy={"successPolicy": "Node0"})
    jobs.wait_phase("lead", "Running")
    jobs.exit("lead-node-0-r0", 0)
    st = jobs.wait_phase("lead", "Succeeded")
    message = (
        "Pod lead-node-0-r0 succeeded (successPolicy Node0: node 0 finishing ends the job), before node(s) 1."
    )
    assert (st["reason"], st["message"]) == ("JobSucceeded", message)
    assert st["completionTime"] and st["attempt"] == 0 and st["restartCount"] == 0
    cond = next(c for c in st["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["message"]) == ("True", message)
    jobs.wait_pods("lead", {"lead-node-0-r0": "Succeeded"})  # cleanPodPolicy Running deleted node 1's pod
    eventually(lambda: "JobSucceeded" in jobs.events("lead"), 20, "JobSucceeded Event")


def test_all_nodes_by_default_waits_for_the_last_node(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("every", nodes=2)
    jobs.wait_phase("every", "Running")
    jobs.exit("every-node-0-r0", 0)
    jobs.wait_pods("every", {"every-node-0-r0": "Succeeded", "every-node-1-r0": "Running"})
    assert jobs.status("every")["phase"] == "Running"
    jobs.exit("every-node-1-r0", 0)
    st = jobs.wait_phase("every", "Succeeded")
    assert st["message"] == "All 2 nodes succeeded (successPolicy AllNodes, the default)."


def test_suspend_deletes_pods_and_resume_recreates_them(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("pause", nodes=2)
    jobs.wait_phase("pause", "Running")
    jobs.patch_spec("pause", {"runPolicy": {"suspend": True}})
    st = jobs.wait_phase("pause", "Suspended")
    assert st["reason"] == "JobSuspended"
    eventually(lambda: not jobs.pods("pause"), 60, "pods deleted while suspended")
    jobs.patch_spec("pause", {"runPolicy": {"suspend": False}})
    st = jobs.wait_phase("pause", "Running")
    assert st["attempt"] == 0 and st["restartCount"] == 0
    eventually(lambda: {"JobSuspended", "JobResumed"} <= set(jobs.events("pause")), 30, "the Events")


def test_nodes_raised_while_suspended_apply_on_resume(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("grow", nodes=2)
    jobs.wait_phase("grow", "Running")
    jobs.patch_spec("grow", {"runPolicy": {"suspend": True}})
    jobs.wait_phase("grow", "Suspended")
    eventually(lambda: not jobs.pods("grow"), 60, "pods deleted while suspended")
    jobs.patch_spec("grow", {"nodes": 3, "runPolicy": {"suspend": False}})
    st = jobs.wait_phase("grow", "Running")
    assert st["nodesReady"] == "3/3"
    pods = jobs.pods("grow")
    assert [p.metadata.name for p in pods] == ["grow-node-0-r0", "grow-node-1-r0", "grow-node-2-r0"]
    for p in pods:
        (trainer,) = [c for c in p.spec.containers if c.name == "trainer"]
        assert {e.name: e.value for e in trainer.env}["PET_NNODES"] == "3", p.metadata.name


def test_job_created_suspended_starts_on_resume(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("queued", nodes=1, runPolicy={"suspend": True})
    jobs.wait_phase("queued", "Suspended")
    assert jobs.pods("queued") == []
    jobs.patch_spec("queued", {"runPolicy": {"suspend": False}})
    jobs.wait_phase("queued", "Running")
