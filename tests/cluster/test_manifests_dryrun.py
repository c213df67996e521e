"""The chart's output and the static manifests are accepted by a real kube-apiserver (server-side
dry-run), and the chart's RBAC grants the operator exactly what it needs and no Secrets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.kubectl import Kubectl, apply_crds

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchjob"
MANIFESTS = ROOT / "manifests"
# prometheus-operator's objects: dry-run where its CRDs are installed (`monitoring_crds`), else left out.
NOT_SERVED_HERE = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
MONITORING = [
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "prometheusRule.labels.release=kube-prometheus-stack",
]


@pytest.fixture(scope="module")
def peering_crds(kubectl: Kubectl) -> list[dict[str, Any]]:
    return apply_crds(kubectl, MANIFESTS / "kopf-peerings.yaml")


@pytest.fixture(scope="module")
def operator_namespace(kubectl: Kubectl) -> Iterator[str]:
    """The static manifests' namespaces, which a dry-run cannot create for the objects in them."""
    for name in ("torchjob-system", "torchjob-jobs"):
        kubectl("create", "namespace", name)
    try:
        yield "torchjob-system"
    finally:
        for name in ("torchjob-system", "torchjob-jobs"):
            kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def monitoring_crds(kubectl: Kubectl) -> None:
    """prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule, ...) from the module
    hack/promoperator.sh pins, served by the apiserver with their OpenAPI validation."""
    from harness import monitoring

    try:
        bin_dir = monitoring.locate()
    except RuntimeError as exc:
        pytest.skip(f"prometheus-operator CRDs unavailable: {exc}")
    monitoring.install_crds(kubectl, bin_dir)


def rendered(helm: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    cmd = [helm, "template", "tj", str(CHART), "--namespace", namespace, "--set", "crds.enabled=false"]
    for item in sets:
        cmd += ["--set", item]
    docs = yaml.safe_load_all(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return [d for d in docs if d]


def render(helm: str, namespace: str, *sets: str) -> str:
    return yaml.safe_dump_all(
        [d for d in rendered(helm, namespace, *sets) if d["kind"] not in NOT_SERVED_HERE]
    )


def dry_run(kubectl: Kubectl, text: str) -> str:
    return kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text).stdout


@pytest.mark.usefixtures("crd", "peering_crds")
def test_static_manifests_pass_server_side_dry_run(kubectl: Kubectl, operator_namespace: str) -> None:
    for name in ("crd.yaml", "kopf-peerings.yaml", "install.yaml"):
        out = dry_run(kubectl, (MANIFESTS / name).read_text())
        assert "serverside-applied (server dry run)" in out, out
    out = dry_run(kubectl, (MANIFESTS / "install.yaml").read_text())
    assert "deployment.apps/torchjob-operator serverside-applied" in out


@pytest.mark.usefixtures("crd", "peering_crds")
def test_namespaced_static_manifest_passes_server_side_dry_run(
    kubectl: Kubectl, operator_namespace: str
) -> None:
    out = dry_run(kubectl, (MANIFESTS / "install-namespaced.yaml").read_text())
    assert "role.rbac.authorization.k8s.io/torchjob-operator serverside-applied" in out, out


@pytest.mark.usefixtures("crd", "peering_crds")
@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["replicaCount=1", "dashboard.enabled=true", *MONITORING],
        ["priorityClassName=system-cluster-critical", "image.digest=sha256:" + "0" * 64],
    ],
    ids=["default", "monitoring", "pinned-priority"],  # an id "gpu" would trigger the --gpu gate
)
def test_chart_output_passes_server_side_dry_run(
    kubectl: Kubectl, helm: str, namespace: str, sets: list[str]
) -> None:
    out = dry_run(kubectl, render(helm, namespace, *sets))
    assert "deployment.apps/tj-torchjob-operator serverside-applied (server dry run)" in out, out


@pytest.mark.usefixtures("crd", "peering_crds")
def test_namespaced_chart_output_passes_server_side_dry_run(
    kubectl: Kubectl, helm: str, namespace: str
) -> None:
    out = dry_run(kubectl, render(helm, namespace, f"watchNamespaces={{{namespace}}}"))
    assert "kopfpeering.kopf.dev/torchjob serverside-applied (server dry run)" in out, out


@pytest.mark.usefixtures("crd", "peering_crds")
def test_namespaced_rbac_grants_the_contract_and_no_secrets(
    kubectl: Kubectl, helm: str, namespace: str
) -> None:
    rendered = [
        d for d in yaml.safe_load_all(render(helm, namespace, f"watchNamespaces={{{namespace}}}")) if d
    ]
    rbac = [d for d in rendered if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "KopfPeering")]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
    user = f"system:serviceaccount:{namespace}:tj-torchjob-operator"

    def can(verb: str, resource: str, ns: str = namespace, *extra: str) -> bool:
        proc = kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={user}", *extra, check=False)
        return proc.stdout.strip() == "yes"

    # (podgroups are left out: can-i cannot resolve a resource whose CRD is not installed.)
    for verb, resource in [
        ("watch", "trainingjobs.torchjob.dev"),
        ("patch", "trainingjobs.torchjob.dev/status"),
        ("update", "trainingjobs.torchjob.dev/finalizers"),
        ("create", "pods"),
        ("delete", "services"),
        ("create", "events"),
        ("patch", "events.events.k8s.io"),
        ("patch", "kopfpeerings.kopf.dev"),
    ]:
        assert can(verb, resource), f"{verb} {resource}"
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "trainingjobs.torchjob.dev"),
        ("delete", "namespaces"),
    ]:
        assert not can(verb, resource), f"{verb} {resource}"
    assert not can("create", "pods", namespace, "--subresource=exec")
    assert not can("list", "pods", "default"), "a namespaced install must not reach other namespaces"


@pytest.mark.usefixtures("monitoring_crds")
def test_monitoring_objects_pass_server_side_dry_run_with_prometheus_operator_crds(
    kubectl: Kubectl, helm: str, namespace: str
) -> None:
    objects = [d for d in rendered(helm, namespace, *MONITORING) if d["kind"] in NOT_SERVED_HERE]
    assert sorted(d["kind"] for d in objects) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    out = dry_run(kubectl, yaml.safe_dump_all(objects))
    for kind in ("servicemonitor", "podmonitor", "prometheusrule"):
        assert f"{kind}.monitoring.coreos.com/" in out and "serverside-applied (server dry run)" in out, out


@pytest.mark.usefixtures("monitoring_crds")
def test_prometheus_rule_is_stored_whole_and_its_schema_is_enforced(
    kubectl: Kubectl, helm: str, namespace: str
) -> None:
    """Applied for real and read back: the apiserver kept every group, rule and field (nothing pruned
    as unknown); a `for` that is no duration is refused by the CRD's own validation."""
    (rule,) = [d for d in rendered(helm, namespace, *MONITORING) if d["kind"] == "PrometheusRule"]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(rule))
    name = rule["metadata"]["name"]
    stored = json.loads(kubectl("get", "prometheusrule", name, "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == rule["spec"]
    assert stored["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule["spec"]["groups"][0]["rules"][0]["for"] = "soon"
    proc = kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(rule), check=False
    )
    assert proc.returncode != 0 and "for" in proc.stderr, proc.stdout + proc.stderr
