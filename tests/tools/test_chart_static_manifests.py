"""manifests/ is rendered from the chart: regenerating with the real helm changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "manifests" / name).read_text()) if d]


def test_regenerating_manifests_changes_nothing(helm: str, gen_manifests: Any) -> None:
    gen = gen_manifests
    diffs = gen.drift(gen.render(helm=helm))
    assert not diffs, "manifests are stale: run hack/gen-manifests.py\n" + "\n".join(diffs)


def test_install_yaml_is_a_plain_kubectl_install() -> None:
    docs = load("install.yaml")
    assert docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "torchjob-system",
            "labels": {
                "app.kubernetes.io/part-of": "torchjob",
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }
    kinds = [d["kind"] for d in docs]
    assert "CustomResourceDefinition" not in kinds  # crd.yaml and kopf-peerings.yaml are applied first
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= set(kinds)
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert "helm.sh/chart" not in labels and labels.get("app.kubernetes.io/managed-by") != "Helm"
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert doc["metadata"]["namespace"] == "torchjob-system", doc["metadata"]["name"]


def test_namespaced_variant_grants_only_roles() -> None:
    docs = load("install-namespaced.yaml")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "torchjob-jobs"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert "--namespace=torchjob-jobs" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_peering_crds_match_the_chart() -> None:
    chart = [
        d for d in yaml.safe_load_all((ROOT / "charts/torchjob/crds/kopf-peerings.yaml").read_text()) if d
    ]
    assert load("kopf-peerings.yaml") == chart
