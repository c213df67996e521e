"""render_pod: whole-object comparison for the CPU and GPU examples, then one behaviour per case."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchjob_core import spec
from torchjob_core.render import pods
from unit.jobs import job_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str, **meta: Any) -> spec.TrainingJob:
    manifest = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["metadata"].update(meta)
    return spec.load(manifest)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


OWNER = {
    "apiVersion": "torchjob.dev/v1alpha1",
    "kind": "TrainingJob",
    "controller": True,
    "blockOwnerDeletion": True,
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
CPU_LIMIT_FROM_DOWNWARD_API = {
    "name": "TORCHJOB_CPU_LIMIT",
    "valueFrom": {"resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu", "divisor": "1"}},
}


def test_cpu_example_node_1() -> None:
    job = load_example("cpu-gloo-2node.yaml", namespace="team", uid="uid-1")
    assert pods.render_pod(job, 1, 0) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "cpu-gloo-node-1-r0",
            "namespace": "team",
            "labels": {
                "app.kubernetes.io/name": "torchjob",
                "app.kubernetes.io/component": "trainer",
                "app.kubernetes.io/managed-by": "torchjob-operator",
                "torchjob.dev/job-name": "cpu-gloo",
                "torchjob.dev/node-index": "1",
                "torchjob.dev/attempt": "0",
            },
            "annotations": {"kubectl.kubernetes.io/default-container": "trainer"},
            "ownerReferences": [{**OWNER, "name": "cpu-gloo", "uid": "uid-1"}],
        },
        "spec": {
            "hostname": "cpu-gloo-node-1",
            "subdomain": "cpu-gloo",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 60,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [
                {
                    "name": "trainer",
                    "image": "torchjob-trainer:0.1.0",
                    "command": ["torchjob-launch", "--", "torchjob-train"],
                    "args": [
                        "--model",
                        "mlp",
                        "--dataset",
                        "synthetic",
                        "--epochs",
                        "1",
                        "--steps-per-epoch",
                        "20",
                        "--batch-size",
                        "32",
                    ],
                    "env": [
                        {"name": "PET_NNODES", "value": "2"},
                        {"name": "PET_NPROC_PER_NODE", "value": "2"},
                        {"name": "PET_NODE_RANK", "value": "1"},
                        {"name": "PET_MASTER_ADDR", "value": "cpu-gloo-node-0.cpu-gloo.team.svc"},
                        {"name": "PET_MASTER_PORT", "value": "29500"},
                        {"name": "TORCHJOB_JOB_NAME", "value": "cpu-gloo"},
                        {"name": "TORCHJOB_NAMESPACE", "value": "team"},
                        {"name": "TORCHJOB_NODE_INDEX", "value": "1"},
                        {"name": "TORCHJOB_NUM_NODES", "value": "2"},
                        {"name": "TORCHJOB_MASTER_ADDR", "value": "cpu-gloo-node-0.cpu-gloo.team.svc"},
                        {"name": "TORCHJOB_MASTER_PORT", "value": "29500"},
                        {"name": "TORCHJOB_BACKEND", "value": "gloo"},
                        {"name": "TORCHJOB_NUM_WORKERS", "value": "1"},
                        {"name": "TORCHJOB_PIN_MEMORY", "value": "auto"},
                        {"name": "TORCHJOB_PERSISTENT_WORKERS", "value": "true"},
                        {"name": "TORCHJOB_PREFETCH_FACTOR", "value": "2"},
                        {"name": "TORCHJOB_AUTOTUNE", "value": "false"},
                        {"name": "TORCHJOB_AUTOTUNE_SECONDS", "value": "60"},
                        CPU_LIMIT_FROM_DOWNWARD_API,
                        {"name": "TORCHJOB_METRICS_PORT", "value": "9400"},
                        {"name": "TORCHJOB_CHECKPOINT_DIR", "value": "/checkpoints"},
                    ],
                    "resources": {
                        "requests": {"cpu": "2", "memory": "2Gi"},
                        "limits": {"cpu": "2", "memory": "4Gi"},
                    },
                    "ports": [
                        {"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"},
                        {"name": "metrics-0", "containerPort": 9400, "protocol": "TCP"},
                        {"name": "metrics-1", "containerPort": 9401, "protocol": "TCP"},
                    ],
                    "volumeMounts": [
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "torchjob-checkpoints", "mountPath": "/checkpoints"},
                    ],
                    "securityContext": CONTAINER_SECURITY,
                }
            ],
            "volumes": [
                # (1 worker x prefetch 2 + 1) x 1Mi x 2 procs / 80% = 7.5Mi, so the 256Mi floor applies.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "torchjob-checkpoints", "emptyDir": {}},
            ],
        },
    }


def test_gpu_example_node_0_third_attempt() -> None:
    job = load_example("gpu-nccl.yaml", namespace="ml", uid="uid-2")
    assert pods.render_pod(job, 0, 2) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "resnet18-nccl-node-0-r2",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "torchjob",
                "app.kubernetes.io/component": "trainer",
                "app.kubernetes.io/managed-by": "torchjob-operator",
                "torchjob.dev/job-name": "resnet18-nccl",
                "torchjob.dev/node-index": "0",
                "torchjob.dev/attempt": "2",
            },
            "annotations": {"kubectl.kubernetes.io/default-container": "trainer"},
            "ownerReferences": [{**OWNER, "name": "resnet18-nccl", "uid": "uid-2"}],
        },
        "spec": {
            "hostname": "resnet18-nccl-node-0",
            "subdomain": "resnet18-nccl",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 60,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "trainer",
                    "image": "torchjob-trainer:0.1.0",
                    "command": ["torchjob-launch", "--", "torchjob-train"],
                    "args": [
                        "--model",
                        "resnet18",
                        "--dataset",
                        "fakedata",
                        "--image-size",
                        "224",
                        "--batch-size",
                        "64",
                        "--epochs",
                        "1",
                    ],
                    "env": [
                        {"name": "PET_NNODES", "value": "2"},
                        {"name": "PET_NPROC_PER_NODE", "value": "8"},
                        {"name": "PET_NODE_RANK", "value": "0"},
                        {"name": "PET_MASTER_ADDR", "value": "resnet18-nccl-node-0.resnet18-nccl.ml.svc"},
                        {"name": "PET_MASTER_PORT", "value": "29500"},
                        {"name": "TORCHJOB_JOB_NAME", "value": "resnet18-nccl"},
                        {"name": "TORCHJOB_NAMESPACE", "value": "ml"},
                        {"name": "TORCHJOB_NODE_INDEX", "value": "0"},
                        {"name": "TORCHJOB_NUM_NODES", "value": "2"},
                        {
                            "name": "TORCHJOB_MASTER_ADDR",
                            "value": "resnet18-nccl-node-0.resnet18-nccl.ml.svc",
                        },
                        {"name": "TORCHJOB_MASTER_PORT", "value": "29500"},
                        {"name": "TORCHJOB_BACKEND", "value": "nccl"},
                        {"name": "TORCHJOB_NUM_WORKERS", "value": "auto"},
                        {"name": "TORCHJOB_PIN_MEMORY", "value": "auto"},
                        {"name": "TORCHJOB_PERSISTENT_WORKERS", "value": "true"},
                        {"name": "TORCHJOB_PREFETCH_FACTOR", "value": "2"},
                        {"name": "TORCHJOB_AUTOTUNE", "value": "false"},
                        {"name": "TORCHJOB_AUTOTUNE_SECONDS", "value": "60"},
                        CPU_LIMIT_FROM_DOWNWARD_API,
                        {"name": "TORCHJOB_METRICS_PORT", "value": "9400"},
                        {"name": "TORCHJOB_CHECKPOINT_DIR", "value": "/checkpoints"},
                    ],
                    "resources": {
                        "requests": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "8"},
                        "limits": {"cpu": "32", "memory": "192Gi", "nvidia.com/gpu": "8"},
                    },
                    "ports": [
                        {"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"},
                        *(
                            {"name": f"metrics-{r}", "containerPort": 9400 + r, "protocol": "TCP"}
                            for r in range(8)
                        ),
                    ],
                    "volumeMounts": [
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "torchjob-checkpoints", "mountPath": "/checkpoints"},
                    ],
                    "securityContext": CONTAINER_SECURITY,
                }
            ],
            "volumes": [
                # (32 CPUs / 8 procs -> 6 workers x prefetch 2 + 1) x 37Mi x 8 procs / 80% = 4810Mi.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4810Mi"}},
                {"name": "torchjob-checkpoints", "emptyDir": {}},
            ],
        },
    }


def test_elastic_example_uses_c10d_and_its_checkpoint_volume() -> None:
    pod = pods.render_pod(load_example("elastic.yaml", namespace="ns"), 1, 0)
    env = env_of(pod)
    assert env["PET_NNODES"] == "1:4"
    assert env["PET_RDZV_ENDPOINT"] == "elastic-mlp-node-0.elastic-mlp.ns.svc:29400"
    assert "PET_NODE_RANK" not in env
    container = pod["spec"]["containers"][0]
    assert container["volumeMounts"] == [
        {"name": "checkpoints", "mountPath": "/checkpoints"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["checkpoints", "dshm"]
    assert container["ports"][0] == {"name": "rendezvous", "containerPort": 29400, "protocol": "TCP"}


@pytest.mark.parametrize(
    ("fields", "expected_command"),
    [
        ({}, ["torchjob-launch", "--", "torchjob-train"]),
        ({"launcher": "torchrun"}, ["torchrun", "--no-python", "torchjob-train"]),
        ({"command": ["python", "-m", "train"]}, ["torchjob-launch", "--", "python", "-m", "train"]),
        ({"launcher": "torchrun", "command": ["my-train"]}, ["torchrun", "--no-python", "my-train"]),
    ],
)
def test_launcher_command(fields: dict[str, Any], expected_command: list[str]) -> None:
    assert pods.render_pod(job_of(**fields), 0, 0)["spec"]["containers"][0]["command"] == expected_command


@pytest.mark.parametrize(
    ("scheduling", "labels", "annotations", "scheduler_name"),
    [
        ({}, {}, {}, None),
        (
            {"queue": "team-a"},
            {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/pod-group-name": "j"},
            {"kueue.x-k8s.io/pod-group-total-count": "1"},
            None,
        ),
        (
            {
                "queue": "team-a",
                "workloadPriorityClass": "prod",
                "topology": {"required": "example.com/block"},
            },
            {
                "kueue.x-k8s.io/queue-name": "team-a",
                "kueue.x-k8s.io/pod-group-name": "j",
                "kueue.x-k8s.io/priority-class": "prod",
            },
            {
                "kueue.x-k8s.io/pod-group-total-count": "1",
                "kueue.x-k8s.io/podset-required-topology": "example.com/block",
            },
            None,
        ),
        (
            {"queue": "team-a", "topology": {"preferred": "kubernetes.io/hostname"}},
            {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/pod-group-name": "j"},
            {
                "kueue.x-k8s.io/pod-group-total-count": "1",
                "kueue.x-k8s.io/podset-preferred-topology": "kubernetes.io/hostname",
            },
            None,
        ),
        ({"gang": True}, {}, {"scheduling.k8s.io/group-name": "j"}, "volcano"),
        ({"gang": True, "gangScheduler": "coscheduling"}, {"scheduling.x-k8s.io/pod-group": "j"}, {}, None),
    ],
)
def test_scheduling_labels_and_annotations(
    scheduling: dict[str, Any],
    labels: dict[str, str],
    annotations: dict[str, str],
    scheduler_name: str | None,
) -> None:
    pod = pods.render_pod(job_of(scheduling=scheduling), 0, 0)
    base = pods.render_pod(job_of(), 0, 0)
    assert pod["metadata"]["labels"] == {**base["metadata"]["labels"], **labels}
    assert pod["metadata"]["annotations"] == {**base["metadata"]["annotations"], **annotations}
    assert pod["spec"].get("schedulerName") == scheduler_name


@pytest.mark.parametrize(
    "scheduling",
    [{}, {"gang": True}, {"gang": True, "gangScheduler": "coscheduling"}],
    ids=["no-gang", "volcano", "coscheduling"],
)
def test_only_the_kubernetes_gang_sets_scheduling_group(scheduling: dict[str, Any]) -> None:
    assert "schedulingGroup" not in pods.render_pod(job_of(scheduling=scheduling), 0, 0)["spec"]


def test_kubernetes_gang_pods_name_their_podgroup_and_keep_the_default_scheduler() -> None:
    job = job_of(scheduling={"gang": True, "gangScheduler": "kubernetes"}, priorityClassName="high")
    base = pods.render_pod(job_of(priorityClassName="high"), 1, 2)
    pod = pods.render_pod(job, 1, 2)
    # Every attempt and replacement joins the same group: the scheduler drops ended pods from it.
    assert pod["spec"] == {**base["spec"], "schedulingGroup": {"podGroupName": "j"}}
    assert pod["metadata"] == base["metadata"]
    assert pods.render_pod(job, 0, 0, replacement=3)["spec"]["schedulingGroup"] == {"podGroupName": "j"}


def test_explicit_scheduler_name_wins_over_volcano() -> None:
    pod = pods.render_pod(job_of(schedulerName="my-sched", scheduling={"gang": True}), 0, 0)
    assert pod["spec"]["schedulerName"] == "my-sched"


def test_user_pod_fields_are_copied() -> None:
    terms: dict[str, Any] = {"nodeSelectorTerms": []}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}}
    job = job_of(
        env=[
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data", "readOnly": True}],
        nodeSelector={"pool": "train"},
        tolerations=[{"key": "k", "operator": "Exists"}],
        affinity=affinity,
        priorityClassName="high",
        serviceAccountName="trainer",
        automountServiceAccountToken=True,
        imagePullPolicy="Always",
    )
    pod = pods.render_pod(job, 0, 0)
    spec_, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["env"][-2:] == [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    assert container["env"][0]["name"] == "PET_NNODES"  # operator env first: user values may use $(VAR)
    assert container["envFrom"] == [{"configMapRef": {"name": "cfg"}}]
    assert container["imagePullPolicy"] == "Always"
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert spec_["volumes"][0] == {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    assert spec_["nodeSelector"] == {"pool": "train"}
    assert spec_["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert spec_["affinity"] == affinity
    assert spec_["priorityClassName"] == "high"
    assert spec_["serviceAccountName"] == "trainer"
    assert spec_["automountServiceAccountToken"] is True


def test_template_is_merged_under_our_fields() -> None:
    template = {
        "metadata": {
            "labels": {"team": "vision", "torchjob.dev/job-name": "spoofed"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kopf.zalando.org/last-handled-configuration": "{}",
                "operator.torchjob.dev/progress": "{}",
            },
        },
        "spec": {
            "restartPolicy": "Always",
            "hostname": "other",
            "terminationGracePeriodSeconds": 300,
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
            "nodeSelector": {"zone": "a"},
            "runtimeClassName": "nvidia",
            "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "dshm", "emptyDir": {}}],
            "containers": [
                {"name": "sidecar", "image": "busybox"},
                {
                    "name": "trainer",
                    "image": "ignored:1",
                    "command": ["ignored"],
                    "args": ["ignored"],
                    "workingDir": "/work",
                    "env": [{"name": "KEEP", "value": "1"}, {"name": "PET_NNODES", "value": "99"}],
                    "resources": {"limits": {"example.com/fpga": "1"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    "securityContext": {"readOnlyRootFilesystem": True},
                },
            ],
        },
    }
    pod = pods.render_pod(job_of(template=template, nodeSelector={"pool": "p"}), 0, 0)
    meta, spec_ = pod["metadata"], pod["spec"]
    assert meta["labels"]["team"] == "vision"
    assert meta["labels"]["torchjob.dev/job-name"] == "j"
    assert meta["annotations"] == {"note": "kept", "kubectl.kubernetes.io/default-container": "trainer"}
    assert spec_["restartPolicy"] == "Never"
    assert spec_["hostname"] == "j-node-0"
    assert spec_["terminationGracePeriodSeconds"] == 300
    assert spec_["runtimeClassName"] == "nvidia"
    assert spec_["securityContext"] == {**POD_SECURITY, "runAsUser": 0, "runAsNonRoot": False}
    assert spec_["nodeSelector"] == {"zone": "a", "pool": "p"}
    assert [v["name"] for v in spec_["volumes"]] == ["cache", "dshm", "torchjob-checkpoints"]
    assert spec_["volumes"][1]["emptyDir"]["medium"] == "Memory"
    sidecar, trainer = spec_["containers"]
    assert sidecar == {"name": "sidecar", "image": "busybox", "env": NODE_0_ENV}
    assert trainer["image"] == "img:1"
    assert trainer["command"] == ["torchjob-launch", "--", "torchjob-train"]
    assert "args" not in trainer
    assert trainer["workingDir"] == "/work"
    env = env_of(pod | {"spec": {"containers": [trainer]}})
    assert env["KEEP"] == "1"
    assert env["PET_NNODES"] == "1"
    assert [e["name"] for e in trainer["env"]].count("PET_NNODES") == 1
    assert trainer["resources"] == {"limits": {"example.com/fpga": "1"}}
    assert trainer["volumeMounts"][0] == {"name": "cache", "mountPath": "/cache"}
    assert trainer["securityContext"] == {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True}


# The identity env of node 0 of job_of()'s job (one node, static rendezvous), in every container.
NODE_0_ENV = [
    {"name": "TORCHJOB_JOB_NAME", "value": "j"},
    {"name": "TORCHJOB_NAMESPACE", "value": "ns"},
    {"name": "TORCHJOB_NODE_INDEX", "value": "0"},
    {"name": "TORCHJOB_NUM_NODES", "value": "1"},
    {"name": "TORCHJOB_MASTER_ADDR", "value": "j-node-0.j.ns.svc"},
    {"name": "TORCHJOB_MASTER_PORT", "value": "29500"},
]


def test_init_containers_and_sidecars_get_the_nodes_identity_env() -> None:
    fetch = {
        "name": "fetch-shard",
        "image": "busybox",
        "command": ["sh", "-c", "fetch shard-$(TORCHJOB_NODE_INDEX)-of-$(TORCHJOB_NUM_NODES)"],
        "env": [
            {"name": "BUCKET", "value": "s3://data"},
            {"name": "TORCHJOB_NODE_INDEX", "value": "7"},  # torchjob's name: dropped, ours wins
            {"name": "RANK", "value": "3"},  # reserved, as in the trainer container: dropped
            {"name": "SHARD", "value": "$(TORCHJOB_NODE_INDEX)"},
        ],
    }
    proxy = {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}  # a native sidecar
    logs = {"name": "logs", "image": "fluent-bit", "env": [{"name": "LEVEL", "value": "info"}]}
    template = {"spec": {"initContainers": [fetch, proxy], "containers": [logs]}}
    job = job_of(
        nodes=3,
        elastic={"minNodes": 2, "maxNodes": 4},
        env=[{"name": "TRAINER_ONLY", "value": "1"}],
        debug=True,
        template=template,
    )
    pod = pods.render_pod(job, 2, 0, replacement=1)
    node_2 = [
        {"name": "TORCHJOB_JOB_NAME", "value": "j"},
        {"name": "TORCHJOB_NAMESPACE", "value": "ns"},
        {"name": "TORCHJOB_NODE_INDEX", "value": "2"},
        {"name": "TORCHJOB_NUM_NODES", "value": "3"},
        {"name": "TORCHJOB_MASTER_ADDR", "value": "j-node-0.j.ns.svc"},
        {"name": "TORCHJOB_MASTER_PORT", "value": "29400"},
    ]
    init = pod["spec"]["initContainers"]
    assert init == [
        {
            **fetch,
            "env": [
                *node_2,
                {"name": "BUCKET", "value": "s3://data"},
                {"name": "SHARD", "value": "$(TORCHJOB_NODE_INDEX)"},
            ],
        },
        {**proxy, "env": node_2},
    ]
    trainer, sidecar = pod["spec"]["containers"]
    assert sidecar == {**logs, "env": [*node_2, {"name": "LEVEL", "value": "info"}]}
    # Only the trainer gets torchrun's and the trainer's settings, the presets and spec.env.
    assert {e["name"] for e in trainer["env"]} >= {e["name"] for e in node_2} | {
        "PET_RDZV_CONF",
        "TORCHJOB_BACKEND",
        "TORCH_DISTRIBUTED_DEBUG",
        "TRAINER_ONLY",
    }
    assert [e for e in trainer["env"] if e["name"] in {e["name"] for e in node_2}] == node_2
    assert len(fetch["env"]) == 4 and "env" not in proxy  # the template is not modified


def test_a_pod_without_init_containers_gets_none() -> None:
    assert "initContainers" not in pods.render_pod(job_of(), 0, 0)["spec"]


def test_template_image_is_used_without_spec_image() -> None:
    manifest = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "custom:2"}]}}},
    }
    pod = pods.render_pod(spec.load(manifest), 0, 0)
    assert pod["spec"]["containers"][0]["image"] == "custom:2"


def test_a_template_termination_message_path_reaches_the_trainer() -> None:
    moved = {"name": "trainer", "terminationMessagePath": "/tmp/why"}
    pod = pods.render_pod(job_of(template={"spec": {"containers": [moved]}}), 0, 0)
    assert pod["spec"]["containers"][0]["terminationMessagePath"] == "/tmp/why"
    assert env_of(pod)["TORCHJOB_TERMINATION_LOG"] == "/tmp/why"
    assert "TORCHJOB_TERMINATION_LOG" not in env_of(pods.render_pod(job_of(), 0, 0))  # the default stays


def test_metrics_port_zero_renders_no_metrics_ports() -> None:
    pod = pods.render_pod(job_of(metrics={"port": 0}, procsPerNode=4), 0, 0)
    assert [p["name"] for p in pod["spec"]["containers"][0]["ports"]] == ["rendezvous"]


def test_checkpoint_volume_is_skipped_when_template_mounts_the_dir() -> None:
    template = {
        "spec": {
            "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "c"}}],
            "containers": [{"name": "trainer", "volumeMounts": [{"name": "ckpt", "mountPath": "/ckpt"}]}],
        }
    }
    pod = pods.render_pod(job_of(template=template, checkpoint={"dir": "/ckpt"}), 0, 0)
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["ckpt", "dshm"]


def test_render_is_pure_and_does_not_share_user_objects() -> None:
    job = job_of(
        env=[{"name": "A", "value": "1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
        template={
            "metadata": {"labels": {"x": "y"}},
            "spec": {"containers": [{"name": "side", "image": "i"}]},
        },
    )
    before = copy.deepcopy(job)
    first = pods.render_pod(job, 3, 1)
    first["spec"]["containers"][0]["env"][-1]["value"] = "mutated"
    first["spec"]["volumes"][0]["emptyDir"]["medium"] = "mutated"
    first["spec"]["containers"][1]["image"] = "mutated"
    first["metadata"]["labels"]["x"] = "mutated"
    assert job == before
    assert pods.render_pod(job, 3, 1) == pods.render_pod(job, 3, 1)
    assert pods.render_pod(job, 3, 1)["spec"]["containers"][0]["env"][-1]["value"] == "1"


def test_longest_name_and_index_fit_dns_limits() -> None:
    name = "a" * 50
    job = spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"image": "i", "nodes": 1000, "procsPerNode": 128},
        }
    )
    pod = pods.render_pod(job, 999, 10_000)
    assert len(pod["spec"]["hostname"]) <= 63
    assert len(pod["metadata"]["name"]) <= 253
    assert all(len(p["name"]) <= 15 for p in pod["spec"]["containers"][0]["ports"])  # IANA_SVC_NAME


def test_trainer_comes_first_when_the_template_has_only_sidecars() -> None:
    template = {"spec": {"containers": [{"name": "proxy", "image": "envoy"}]}}
    pod = pods.render_pod(job_of(template=template), 0, 0)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer", "proxy"]


def test_debug_and_network_presets_yield_to_the_users_env() -> None:
    assert not {"TORCH_DISTRIBUTED_DEBUG", "GLOO_SOCKET_IFNAME"} & set(
        env_of(pods.render_pod(job_of(), 0, 0))
    )
    cpu = env_of(pods.render_pod(job_of(debug=True, networkInterface="eth0"), 0, 0))
    assert {k: cpu[k] for k in ("TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL", "LOGLEVEL")} == {
        "TORCH_DISTRIBUTED_DEBUG": "INFO",
        "TORCH_CPP_LOG_LEVEL": "INFO",
        "LOGLEVEL": "INFO",
    }
    assert (cpu["NCCL_SOCKET_IFNAME"], cpu["GLOO_SOCKET_IFNAME"]) == ("eth0", "eth0")
    assert "NCCL_DEBUG" not in cpu  # gloo job: NCCL's logging would only be noise

    gpu = pods.render_pod(
        job_of(
            debug=True,
            resources={"gpusPerNode": 1},
            env=[{"name": "NCCL_DEBUG", "value": "WARN"}],
            template={
                "spec": {"containers": [{"name": "trainer", "env": [{"name": "LOGLEVEL", "value": "DEBUG"}]}]}
            },
        ),
        0,
        0,
    )
    names = [e["name"] for e in gpu["spec"]["containers"][0]["env"]]
    assert names.count("NCCL_DEBUG") == 1 and names.count("LOGLEVEL") == 1  # no duplicate env names
    got = env_of(gpu)
    assert (got["NCCL_DEBUG"], got["LOGLEVEL"], got["NCCL_DEBUG_SUBSYS"]) == ("WARN", "DEBUG", "INIT,NET")


TEMPLATE_KUEUE_METADATA = {
    "labels": {"kueue.x-k8s.io/priority-class": "from-template"},
    "annotations": {
        "kueue.x-k8s.io/podset-preferred-topology": "example.com/rack",
        "kueue.x-k8s.io/podset-unconstrained-topology": "true",
        "kueue.x-k8s.io/podset-slice-size": "2",
    },
}


def test_kueue_fields_win_over_the_template_and_drop_its_topology_request() -> None:
    # Kueue rejects a pod with two topology requests, so the template's go; its other annotations stay.
    scheduling = {
        "queue": "q",
        "workloadPriorityClass": "prod",
        "topology": {"required": "example.com/block"},
    }
    pod = pods.render_pod(job_of(scheduling=scheduling, template={"metadata": TEMPLATE_KUEUE_METADATA}), 0, 0)
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "prod"
    kueue_annotations = {k: v for k, v in pod["metadata"]["annotations"].items() if k.startswith("kueue.")}
    assert kueue_annotations == {
        "kueue.x-k8s.io/podset-required-topology": "example.com/block",
        "kueue.x-k8s.io/podset-slice-size": "2",
        "kueue.x-k8s.io/pod-group-total-count": "1",
    }


def test_without_the_kueue_fields_the_template_metadata_reaches_the_pods() -> None:
    # The escape hatch keeps working: only a field that is set takes the key over.
    pod = pods.render_pod(
        job_of(scheduling={"queue": "q"}, template={"metadata": TEMPLATE_KUEUE_METADATA}), 0, 0
    )
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "from-template"
    for key, value in TEMPLATE_KUEUE_METADATA["annotations"].items():
        assert pod["metadata"]["annotations"][key] == value


def test_kueue_pod_group_spans_attempts_and_counts_nodes() -> None:
    # One group per job: a gang restart's pods join the admitted Workload instead of queueing again.
    job = job_of(nodes=3, scheduling={"queue": "team-a"})
    for pod in (pods.render_pod(job, 0, 0), pods.render_pod(job, 2, 4)):
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "j"
        assert pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "3"
