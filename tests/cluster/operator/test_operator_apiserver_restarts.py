"""API server restarts against the real kube-apiserver: it is stopped and started again three times
(harness ControlPlane.restart_apiserver) while 20 TrainingJobs are created and run. Every client loses
its connections and watches each time, and the restarted watch cache begins at etcd's current revision,
so watches resumed from an older resourceVersion get 410 Gone and Kopf re-lists. Every job must converge
with exactly one pod per node, none duplicated or orphaned, and nothing restarted.

The test restarts a control plane of its own: the shared one's controllers would come out of four
restarts with their watches in back-off, and the next test's namespace would wait for its ServiceAccount."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from harness.controlplane import ControlPlane, default_service_account_exists
from harness.kubectl import apply_crds, bind
from harness.polling import eventually
from kubernetes import client

from ..conftest import CRD_MANIFEST
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


@pytest.fixture(scope="module")
def own_plane(k8s_bin_dir: Path) -> Iterator[ControlPlane]:
    """A control plane for this module alone, with the CRD applied."""
    with ControlPlane(bin_dir=k8s_bin_dir) as cp:
        apply_crds(bind(cp.kubeconfig), CRD_MANIFEST)
        yield cp


@pytest.fixture
def own_jobs(own_plane: ControlPlane) -> Iterator[Jobs]:
    with own_plane.api_client() as api:
        ns = "restarts"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        eventually(lambda: default_service_account_exists(api, ns), 60, f"ServiceAccount {ns}/default")
        yield Jobs(api, ns)


@pytest.fixture
def own_operator(own_plane: ControlPlane, own_jobs: Jobs, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(own_jobs.ns, own_plane.kubeconfig, tmp_path / "operator.log").start()
    yield op
    op.stop()


def test_apiserver_restarted_three_times_while_twenty_jobs_are_created_and_run(
    own_plane: ControlPlane, own_jobs: Jobs, own_operator: OperatorProcess
) -> None:
    control_plane, jobs, operator = own_plane, own_jobs, own_operator
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
