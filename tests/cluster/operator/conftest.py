"""The operator as a real subprocess (`python -m torchjob_operator --namespace NS --standalone`) against
the session's control plane, so tests can SIGKILL it; plus small helpers to drive and read jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import kueue
from harness.controlplane import ControlPlane
from harness.polling import eventually
from harness.ports import free_ports
from kubernetes import client

GROUP, VERSION, PLURAL = "torchjob.dev", "v1alpha1", "trainingjobs"
EXIT_ANNOTATION = "kwok.torchjob.dev/exit-code"
EXIT_MESSAGE_ANNOTATION = "kwok.torchjob.dev/exit-message"
REPO_ROOT = Path(__file__).resolve().parents[3]


class OperatorProcess:
    def __init__(
        self, namespace: str, kubeconfig: Path, log: Path, args: tuple[str, ...] = ("--standalone",)
    ) -> None:
        self.namespace, self.kubeconfig, self.log, self.args = namespace, kubeconfig, log, args
        self.metrics_port, self.health_port = free_ports(2)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "torchjob_operator", "--namespace", self.namespace, *self.args]
        cmd += ["--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port), "--verbose"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer removal, exactly like a crashed pod."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, crd: Any, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """start_operator(kubeconfig=None, args=("--standalone",)) -> a running operator for the namespace."""
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path | None = None, args: tuple[str, ...] = ("--standalone",)) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        op = OperatorProcess(namespace, kubeconfig or control_plane.kubeconfig, log, args)
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
    # With no operator left, nothing removes Kopf's finalizer: strip it so the namespace can go.
    custom: Any = client.CustomObjectsApi(kube)
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        try:
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                item["metadata"]["name"],
                {"metadata": {"finalizers": None}},
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator()


class Jobs:
    """Create TrainingJobs and read them, their pods and Events in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom: Any = client.CustomObjectsApi(api)
        self.core: Any = client.CoreV1Api(api)

    def create(self, name: str, nodes: int = 2, *, gpus: int = 0, **spec: Any) -> dict[str, Any]:
        run_policy = {"backoffSeconds": 1, **spec.pop("runPolicy", {})}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "image": "torchjob-trainer:test",
                "nodes": nodes,
                "resources": {"gpusPerNode": gpus, "requests": {"cpu": "1", "memory": "1Gi"}},
                "runPolicy": run_policy,
                **spec,
            },
        }
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name))

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if check(st) else None

        try:
            return eventually(probe, timeout, f"{name}: {what}", interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; pods: {self.pod_phases(name)}") from None

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait(name, lambda st: st.get("phase") == phase, f"phase {phase}", timeout)

    def pods(self, name: str) -> list[Any]:
        sel = f"torchjob.dev/job-name={name}"
        return sorted(
            self.core.list_namespaced_pod(self.ns, label_selector=sel).items, key=lambda p: p.metadata.name
        )

    def pod_phases(self, name: str) -> dict[str, str]:
        return {p.metadata.name: p.status.phase for p in self.pods(name)}

    def wait_pods(self, name: str, expected: dict[str, str], timeout: float = 60) -> None:
        def probe() -> bool:
            return self.pod_phases(name) == expected

        try:
            eventually(probe, timeout, f"{name} pods {expected}", interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; got {self.pod_phases(name)}") from None

    def exit(self, pod: str, code: int, message: str | None = None) -> None:
        """Tell KWOK to end this pod with `code` and, as its termination message, `message`
        (docs/contracts.md)."""
        annotations = {EXIT_ANNOTATION: str(code)}
        if message is not None:
            annotations[EXIT_MESSAGE_ANNOTATION] = message
        self.core.patch_namespaced_pod(pod, self.ns, {"metadata": {"annotations": annotations}})

    def event_objects(self, name: str) -> list[Any]:
        selector = f"involvedObject.name={name}"
        return list(self.core.list_namespaced_event(self.ns, field_selector=selector).items)

    def events(self, name: str) -> list[str]:
        return sorted(str(e.reason) for e in self.event_objects(name))

    def event_messages(self, name: str, reason: str) -> list[str]:
        """The messages of `name`'s Events of `reason`. The operator posts an Event after the status
        write it belongs to, so a test that saw the status polls for its Event."""
        return [str(e.message) for e in self.event_objects(name) if e.reason == reason]


@pytest.fixture
def jobs(kube: client.ApiClient, namespace: str) -> Jobs:
    return Jobs(kube, namespace)


STORAGE_CLASS = "torchjob-test-static"


@pytest.fixture
def static_pv(kube: client.ApiClient, namespace: str) -> Iterator[Callable[[str], str]]:
    """static_pv(suffix) -> the name of a 1Gi ReadWriteOnce hostPath PV of STORAGE_CLASS (no StorageClass
    object exists, so the PV controller binds a claim of that class to it at once)."""
    core: Any = client.CoreV1Api(kube)
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{namespace}-{suffix}"
        core.create_persistent_volume(
            {
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": f"/tmp/{name}"},
                },
            }
        )
        made.append(name)
        return name

    yield make
    for name in made:
        core.delete_persistent_volume(name)


KUEUE = ("kueue.x-k8s.io", "v1beta2")
MakeQueues = Callable[[str, dict[str, Any], int], str]


@pytest.fixture(scope="module")
def kueue_manager(control_plane: ControlPlane, crd: Any) -> Iterator[kueue.Kueue]:
    """A real Kueue manager, started once for each module that asks for it (the rest of the tier never
    waits for it)."""
    try:
        manager = kueue.Kueue(control_plane)
        manager.start()
    except kueue.KueueUnavailableError as exc:
        if os.environ.get("TORCHJOB_REQUIRE_CLUSTER") == "1":
            raise
        pytest.skip(str(exc))
    try:
        yield manager
    finally:
        manager.stop()


KUEUE_KINDS = {
    "resourceflavors": "ResourceFlavor",
    "clusterqueues": "ClusterQueue",
    "localqueues": "LocalQueue",
    "topologies": "Topology",
}


def _kueue_obj(plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "/".join(KUEUE),
        "kind": KUEUE_KINDS[plural],
        "metadata": {"name": name},
        "spec": spec,
    }


def workload(kube: client.ApiClient, namespace: str, job: str) -> dict[str, Any]:
    """The Workload Kueue made for a job's pod group (named like the group, which is named like the job)."""
    custom: Any = client.CustomObjectsApi(kube)
    return dict(custom.get_namespaced_custom_object(*KUEUE, namespace, "workloads", job))


@pytest.fixture
def make_queues(kube: client.ApiClient, namespace: str, kueue_manager: kueue.Kueue) -> Iterator[MakeQueues]:
    """make_queues(local_queue, flavor_spec, cpus) -> the ClusterQueue's name: a ResourceFlavor with that
    spec, a ClusterQueue of `cpus` CPUs (serving only the test's namespace, preempting lower priorities)
    and the LocalQueue in the test's namespace. One set per test."""
    custom: Any = client.CustomObjectsApi(kube)
    name = f"cq-{namespace[-6:]}"
    made: list[tuple[str, str]] = []

    def make(local_queue: str, flavor: dict[str, Any], cpus: int) -> str:
        quota = [{"name": name, "resources": [{"name": "cpu", "nominalQuota": str(cpus)},
                                              {"name": "memory", "nominalQuota": "1Ti"}]}]  # fmt: skip
        cq = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": quota}],
            "preemption": {"withinClusterQueue": "LowerPriority"},
        }
        for plural, spec in (("resourceflavors", flavor), ("clusterqueues", cq)):
            custom.create_cluster_custom_object(*KUEUE, plural, _kueue_obj(plural, name, spec))
            made.append((plural, name))
        lq = _kueue_obj("localqueues", local_queue, {"clusterQueue": name})
        custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", lq)
        return name

    yield make
    for plural, obj_name in reversed(made):
        try:
            custom.delete_cluster_custom_object(*KUEUE, plural, obj_name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def priorities(kube: client.ApiClient, namespace: str) -> Iterator[tuple[str, str]]:
    """Two PriorityClasses (low, high): Kueue orders and preempts workloads by their pods' priority."""
    sched: Any = client.SchedulingV1Api(kube)
    names = (f"low-{namespace[-6:]}", f"high-{namespace[-6:]}")
    for value, name in enumerate(names):
        sched.create_priority_class({"metadata": {"name": name}, "value": 1000 * (value + 1)})
    yield names
    for name in names:
        sched.delete_priority_class(name)


@pytest.fixture
def workload_priorities(
    kube: client.ApiClient, namespace: str, kueue_manager: kueue.Kueue
) -> Iterator[dict[str, int]]:
    """Two Kueue WorkloadPriorityClasses, {name: value}, low first: Kueue orders and preempts the workloads
    of jobs that name one (scheduling.workloadPriorityClass) by its value."""
    custom: Any = client.CustomObjectsApi(kube)
    classes = {f"wlow-{namespace[-6:]}": 100, f"whigh-{namespace[-6:]}": 10000}
    for name, value in classes.items():
        body = {"apiVersion": "/".join(KUEUE), "kind": "WorkloadPriorityClass", "metadata": {"name": name},
                "value": value}  # fmt: skip
        custom.create_cluster_custom_object(*KUEUE, "workloadpriorityclasses", body)
    yield classes
    for name in classes:
        custom.delete_cluster_custom_object(*KUEUE, "workloadpriorityclasses", name)


@pytest.fixture
def make_topology(
    kube: client.ApiClient, namespace: str, kueue_manager: kueue.Kueue
) -> Iterator[Callable[[list[str]], str]]:
    """make_topology(level node labels, top first) -> the name of a Kueue Topology with those levels. Ask for
    it before make_queues, so that it is deleted after the ResourceFlavor naming it (Kueue holds a Topology
    in use by its finalizer)."""
    custom: Any = client.CustomObjectsApi(kube)
    made: list[str] = []

    def make(levels: list[str]) -> str:
        name = f"topo-{namespace[-6:]}-{len(made)}"
        spec = {"levels": [{"nodeLabel": label} for label in levels]}
        custom.create_cluster_custom_object(*KUEUE, "topologies", _kueue_obj("topologies", name, spec))
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            custom.delete_cluster_custom_object(*KUEUE, "topologies", name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
