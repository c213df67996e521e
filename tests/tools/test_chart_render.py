"""The chart rendered by the real helm, one scenario values file at a time (charts/torchjob/ci/)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "torchjob"
CI = CHART / "ci"
SCENARIOS = sorted(p.name for p in CI.glob("*-values.yaml"))

# docs/contracts.md, "RBAC it needs", as (apiGroup, resource, verb) triples.
CONTRACT_RULES = {
    *(("torchjob.dev", "trainingjobs", v) for v in ("get", "list", "watch", "patch", "update", "delete")),
    *(("torchjob.dev", "trainingjobs/status", v) for v in ("get", "patch", "update")),
    ("torchjob.dev", "trainingjobs/finalizers", "update"),
    *(("", "pods", v) for v in ("get", "list", "watch", "create", "delete", "deletecollection", "patch")),
    *(("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    ("", "persistentvolumeclaims", "create"),
    *((g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")),
    *(
        (g, "podgroups", v)
        for g in ("scheduling.volcano.sh", "scheduling.x-k8s.io")
        for v in ("get", "list", "watch", "create", "patch", "delete")
    ),
    # Deleted on suspend too: the resume renders them from the spec as it is then.
    *(("scheduling.k8s.io", "podgroups", v) for v in ("get", "list", "watch", "create", "delete")),
    *(("resource.k8s.io", "resourceclaimtemplates", v) for v in ("create", "delete")),
}
PEERING_VERBS = ("get", "list", "watch", "patch")
CLUSTER_ONLY = {
    *(("kopf.dev", r, v) for r in ("kopfpeerings", "clusterkopfpeerings") for v in PEERING_VERBS),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}
NAMESPACED_ONLY = {("kopf.dev", "kopfpeerings", v) for v in PEERING_VERBS}


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_passes_strict(chart: Any, scenario: str) -> None:
    proc = chart.run("lint", "--strict", str(CHART), "-f", str(CI / scenario), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_renders_the_operator_securely(chart: Any, scenario: str) -> None:
    docs = chart.render(CI / scenario)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert "--metrics-port=8080" in container["args"]
    assert "--health-port=8081" in container["args"]
    assert container["command"] == ["python", "-m", "torchjob_operator"]
    # No object the chart renders may grant or mount Secrets.
    for doc in docs:
        for rule in doc.get("rules", []):
            assert "secrets" not in rule["resources"], doc["metadata"]["name"]


def test_default_is_cluster_wide_with_two_peered_replicas(chart: Any) -> None:
    docs = chart.render(CI / "default-values.yaml")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = operator_container(docs)["args"]
    assert "--peering=torchjob" in args
    assert not [a for a in args if a.startswith("--namespace")]
    env = {e["name"]: e for e in operator_container(docs)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "torchjob"
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not by_kind(docs, "Role")
    assert not by_kind(docs, "KopfPeering")


def test_cluster_role_is_exactly_the_contract(chart: Any) -> None:
    docs = chart.render(CI / "default-values.yaml")
    assert triples(one(docs, "ClusterRole")["rules"]) == CONTRACT_RULES | CLUSTER_ONLY
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "torchjob-system"}
    ]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_namespaced_scope_grants_nothing_cluster_wide(chart: Any) -> None:
    docs = chart.render(CI / "namespaced-values.yaml")
    assert not by_kind(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    assert not by_kind(docs, "ClusterKopfPeering")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert triples(role["rules"]) == CONTRACT_RULES | NAMESPACED_ONLY
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"torchjob-system"}
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    args = operator_container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    assert not by_kind(docs, "PodDisruptionBudget")


def test_kueue_local_queues_in_each_watched_namespace_and_no_extra_rbac(chart: Any) -> None:
    sets = ["kueue.localQueues[0].name=team", "kueue.localQueues[0].clusterQueue=research"]
    docs = chart.render(CI / "namespaced-values.yaml", sets=sets)
    queues = by_kind(docs, "LocalQueue")
    assert sorted((q["metadata"]["namespace"], q["metadata"]["name"]) for q in queues) == [
        ("team-a", "team"),
        ("team-b", "team"),
    ]
    assert {q["apiVersion"] for q in queues} == {"kueue.x-k8s.io/v1beta2"}
    assert {q["spec"]["clusterQueue"] for q in queues} == {"research"}
    # Kueue's pod-group integration acts on the labelled pods: the operator needs no Kueue permission.
    for role in by_kind(docs, "Role"):
        assert triples(role["rules"]) == CONTRACT_RULES | NAMESPACED_ONLY


def test_crd_is_templated_and_kept_on_uninstall(chart: Any) -> None:
    docs = chart.render(CI / "default-values.yaml")
    crd = one(docs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "trainingjobs.torchjob.dev"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"]["group"] == "torchjob.dev"
    assert "tj" in crd["spec"]["names"]["shortNames"]
    assert not by_kind(chart.render(CI / "gpu-values.yaml"), "CustomResourceDefinition")
    unkept = one(chart.render(sets=["crds.keep=false"]), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})


def test_peering_crds_ship_in_crds_dir(chart: Any) -> None:
    out = chart.run("show", "crds", str(CHART)).stdout
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d}
    assert names == {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}


def test_monitoring_objects_select_operator_and_every_trainer_rank(chart: Any) -> None:
    docs = chart.render(CI / "monitoring-on-values.yaml")
    service = one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    # The job counters' `namespace` (the TrainingJob's) wins over the target's (the operator's).
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert (
        service["spec"]["selector"].items()
        <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )

    pod_monitor = one(docs, "PodMonitor")
    # Labels every trainer pod carries (docs/contracts.md, "Pod shape").
    trainer_labels = {
        "app.kubernetes.io/name": "torchjob",
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "torchjob-operator",
        "torchjob.dev/job-name": "mnist",
    }
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= trainer_labels.items()
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
    keep = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert keep[0]["sourceLabels"] == ["__meta_kubernetes_pod_container_port_name"]
    regex = re.compile(f"^(?:{keep[0]['regex']})$")  # Prometheus anchors relabel regexes
    assert all(regex.match(f"metrics-{i}") for i in range(8))
    assert not regex.match("metrics") and not regex.match("c10d")


def test_dashboard_configmap_carries_the_dashboard_json(chart: Any) -> None:
    docs = chart.render(CI / "monitoring-on-values.yaml")
    configmap = one(docs, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Training"}
    (text,) = configmap["data"].values()
    on_disk = json.loads((CHART / "files" / "dashboards" / "torchjob-training.json").read_text())
    assert json.loads(text) == on_disk


def test_prometheus_rule_is_off_by_default_and_selects_this_releases_operator(chart: Any) -> None:
    assert not by_kind(chart.render(CI / "default-values.yaml"), "PrometheusRule")
    docs = chart.render(CI / "monitoring-on-values.yaml")
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "torchjob-system"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "tj"
    # The operator alerts select the ServiceMonitor's scrape job: Prometheus Operator names it after the
    # Service (no jobLabel), in the operator's namespace.
    service = one(docs, "Service")["metadata"]["name"]
    assert "jobLabel" not in one(docs, "ServiceMonitor")["spec"]
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert f'up{{job="{service}", namespace="torchjob-system"}}' in exprs["TorchjobOperatorDown"]
    for name in ("TrainingJobFailed", "TrainingJobRestartingOften", "TrainingJobStuckPending"):
        assert f'job="{service}"' in exprs[name], name


def test_prometheus_rule_takes_thresholds_from_values(chart: Any) -> None:
    sets = ["prometheusRule.enabled=true", "serviceMonitor.enabled=true"]
    sets += ["prometheusRule.rules.restartsThreshold=7", "prometheusRule.rules.pendingFor=2h"]
    docs = chart.render(sets=sets, namespace="ml-ops")
    rules = {r["alert"]: r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert rules["TrainingJobRestartingOften"]["expr"].endswith("> 7")
    assert rules["TrainingJobStuckPending"]["for"] == "2h"
    assert 'namespace="ml-ops"' in rules["TorchjobOperatorDown"]["expr"]


def test_gpu_scenario(chart: Any) -> None:
    docs = chart.render(CI / "gpu-values.yaml")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("registry.example.com/ml/torchjob-operator@sha256:")
    assert pod["priorityClassName"] == "system-cluster-critical"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.present"
    assert one(docs, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["ml-training"]}


def test_names_fit_dns_labels_for_a_long_release_name(chart: Any) -> None:
    out = chart.run(
        "template",
        "a-very-long-release-name-for-a-platform-team-install",
        str(CHART),
        "-f",
        str(CI / "monitoring-on-values.yaml"),
    ).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] != "CustomResourceDefinition":
            assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["replicaCuont=2"], "replicaCuont"),
        (["replicaCount=2", "peering.enabled=false"], "replicaCount"),
        (["health.port=8080"], "health.port"),
        (["extraArgs={--standalone}"], "extraArgs"),
        (["extraArgs={--namespace=x}"], "extraArgs"),
        (["serviceMonitor.enabled=true", "metrics.service.enabled=false"], "serviceMonitor.enabled"),
        (["image.pullPolicy=Sometimes"], "pullPolicy"),
        (["watchNamespaces={Team_A}"], "watchNamespaces"),
        (["metrics.port=70000"], "metrics/port"),
        (["podMonitor.interval=soon"], "podMonitor/interval"),
        (["prometheusRule.enabled=true"], "serviceMonitor.enabled=true"),
        (["prometheusRule.rules.pendingFor=soon"], "prometheusRule/rules/pendingFor"),
        (["kueue.localQueues[0].name=q", "kueue.localQueues[0].clusterQueue=cq"], "kueue.localQueues"),
        (["watchNamespaces={a}", "kueue.localQueues[0].name=q"], "clusterQueue"),
    ],
)
def test_invalid_values_fail_naming_the_key(chart: Any, sets: list[str], key: str) -> None:
    assert key in chart.render_error(sets)


def test_notes_have_copy_pasteable_commands(chart: Any) -> None:
    proc = chart.run("install", "tj", str(CHART), "--dry-run=client", "-n", "torchjob-system")
    assert "kubectl -n torchjob-system get pods -l app.kubernetes.io/instance=tj" in proc.stdout
    assert "port-forward svc/tj-torchjob-operator-metrics 8080" in proc.stdout
    # Jobs outlive an uninstalled operator only as Terminating objects: the notes say to delete them first.
    assert "kubectl delete tj --all -A --wait" in proc.stdout
