"""API server restarts against the real kube-apiserver: it is stopped and started again three times
(harness ControlPlane.restart_apiserver) while 20 TrainingJobs are created and run. Every client loses
its connections and watches each time, and the restarted watch cache begins at etcd's current revision,
so watches resumed from an older resourceVersion get 410 Gone and Kopf re-lists. Every job must converge
with exactly one pod per node, none duplicated or orphaned, and nothing restarted."""

from __future__ import annotations

import threading
import time

import urllib3
from harness.controlplane import ControlPlane
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess

JOBS, NODES = 20, 2
# A restart while creation starts, one mid-way, and one once every job exists and runs.
RESTART_AFTER_CREATED = (3, 12)
WATCH_410 = "Restarting the watch-stream"  # Kopf's debug line when a watch answers 410 Gone


class Creator(threading.Thread):
    """Creates the jobs in order as a user's script would: each create retried until the API answers,
    an AlreadyExists (409, a create that landed before its answer was lost) counting as done."""

    def __init__(self, jobs: Jobs, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.jobs, self.names = jobs, names
        self.created = 0
        self.retried = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for name in self.names:
                self._create(name)
                self.created += 1
        except BaseException as exc:  # handed to the test's thread
            self.error = exc

    def _create(self, name: str) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                self.jobs.create(name, nodes=NODES)
                return
            except client.ApiException as exc:
                if exc.status == 409:
                    return
                if exc.status not in {429, 500, 503, 504} or time.monotonic() > deadline:
                    raise
            except (urllib3.exceptions.HTTPError, OSError):
                if time.monotonic() > deadline:
                    raise
            self.retried += 1
            time.sleep(0.2)  # the API server is down: a client's retry pause, not a wait for state


def test_apiserver_restarted_three_times_while_twenty_jobs_are_created_and_run(
    control_plane: ControlPlane, jobs: Jobs, operator: OperatorProcess
) -> None:
    names = [f"restart-{i}" for i in range(JOBS)]
    creator = Creator(jobs, names)
    creator.start()
    for after in RESTART_AFTER_CREATED:
        eventually(lambda n=after: creator.created >= n or creator.error, 180, f"{after} jobs created")
        control_plane.restart_apiserver()
    creator.join(timeout=300)
    assert creator.error is None, creator.error
    eventually(lambda: any(jobs.status(n).get("phase") == "Running" for n in names), 180, "a job Running")
    control_plane.restart_apiserver()

    for name in names:
        jobs.wait_phase(name, "Running", timeout=240)
    all_pods = jobs.core.list_namespaced_pod(jobs.ns).items
    by_job = sorted((p.metadata.labels["torchjob.dev/job-name"], p.metadata.name) for p in all_pods)
    # No duplicate and no orphan: exactly the pods of attempt 0 of the jobs that exist, one per node.
    assert by_job == sorted((n, f"{n}-node-{i}-r0") for n in names for i in range(NODES))
    for name in names:
        assert jobs.status(name).get("restartCount", 0) == 0, jobs.status(name)

    for pod in all_pods:
        jobs.exit(pod.metadata.name, 0)
    for name in names:
        jobs.wait_phase(name, "Succeeded", timeout=180)
    log = operator.output()
    print(f"creates retried {creator.retried} times; Kopf watches restarted on 410: {log.count(WATCH_410)}")
    assert operator.proc is not None and operator.proc.poll() is None, log[-4000:]
    assert log.count(WATCH_410) >= 1, "no watch answered 410 Gone after the restarts"
