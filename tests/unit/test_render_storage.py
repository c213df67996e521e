"""Checkpoint storage: the claim the operator creates, which pods mount it, and where checkpoints live."""

from __future__ import annotations

from typing import Any

import pytest
from torchjob_core import spec
from torchjob_core.render import storage
from torchjob_core.render.pods import render_pod


def job(nodes: int = 2, **fields: Any) -> spec.TrainingJob:
    body = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
        "spec": {"image": "img", "nodes": nodes, **fields},
    }
    return spec.load(body)


def ckpt_volume(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((v for v in pod["spec"]["volumes"] if v["name"] == "torchjob-checkpoints"), None)


def ckpt_mounts(pod: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    return [m for m in mounts if m["mountPath"] == "/checkpoints"]


def test_the_claim_template_becomes_one_owned_claim() -> None:
    j = job(checkpoint={"storage": {"size": "20Gi", "storageClassName": "fast"}})
    assert storage.render_claim(j) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "j-checkpoints",
            "namespace": "ns",
            "labels": {
                "app.kubernetes.io/name": "torchjob",
                "app.kubernetes.io/component": "trainer",
                "app.kubernetes.io/managed-by": "torchjob-operator",
                "torchjob.dev/job-name": "j",
            },
            "ownerReferences": [
                {
                    "apiVersion": "torchjob.dev/v1alpha1",
                    "kind": "TrainingJob",
                    "name": "j",
                    "uid": "u",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "20Gi"}},
            "storageClassName": "fast",
        },
    }


def test_a_retained_claim_has_no_owner() -> None:
    claim = storage.render_claim(job(checkpoint={"storage": {"size": "1Gi", "whenJobDeleted": "Retain"}}))
    assert claim is not None and "ownerReferences" not in claim["metadata"]
    assert "storageClassName" not in claim["spec"]


def test_an_existing_claim_is_mounted_not_created() -> None:
    j = job(checkpoint={"storage": {"existingClaim": "mine", "accessModes": ["ReadWriteMany"]}})
    assert storage.render_claim(j) is None
    for index in (0, 1):
        assert ckpt_volume(render_pod(j, index, 0)) == {
            "name": "torchjob-checkpoints",
            "persistentVolumeClaim": {"claimName": "mine"},
        }


@pytest.mark.parametrize(
    ("modes", "node1"),
    [
        (["ReadWriteMany"], {"persistentVolumeClaim": {"claimName": "j-checkpoints"}}),
        (["ReadWriteOnce"], {"emptyDir": {}}),
        (["ReadWriteOncePod"], {"emptyDir": {}}),
    ],
)
def test_only_readwritemany_is_mounted_by_every_pod(modes: list[str], node1: dict[str, Any]) -> None:
    j = job(checkpoint={"storage": {"size": "1Gi", "accessModes": modes}})
    assert ckpt_volume(render_pod(j, 0, 3)) == {
        "name": "torchjob-checkpoints",
        "persistentVolumeClaim": {"claimName": "j-checkpoints"},
    }
    assert ckpt_volume(render_pod(j, 1, 3)) == {"name": "torchjob-checkpoints", **node1}
    for index in (0, 1):
        assert ckpt_mounts(render_pod(j, index, 3)) == [
            {"name": "torchjob-checkpoints", "mountPath": "/checkpoints"}
        ]


def test_storage_replaces_a_template_mount_at_the_checkpoint_dir() -> None:
    template = {
        "spec": {
            "containers": [{"name": "trainer", "volumeMounts": [{"name": "t", "mountPath": "/checkpoints"}]}],
            "volumes": [{"name": "t", "emptyDir": {}}],
        }
    }
    j = job(checkpoint={"storage": {"size": "1Gi"}}, template=template)
    assert ckpt_mounts(render_pod(j, 0, 0)) == [{"name": "torchjob-checkpoints", "mountPath": "/checkpoints"}]


CLAIM = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
AT_DIR = [{"name": "data", "mountPath": "/checkpoints"}]


@pytest.mark.parametrize(
    ("fields", "where", "ephemeral"),
    [
        ({}, "an emptyDir at /checkpoints", True),
        ({"volumes": [CLAIM], "volumeMounts": AT_DIR}, "volume data at /checkpoints", False),
        (
            {"volumes": [{"name": "data", "emptyDir": {}}], "volumeMounts": AT_DIR},
            "volume data (an emptyDir) at /checkpoints",
            True,
        ),
        (
            {"checkpoint": {"storage": {"size": "5Gi"}}},
            "PersistentVolumeClaim j-checkpoints (5Gi, deleted with the job) at /checkpoints, on node 0's "
            "pod (rank 0)",
            False,
        ),
        (
            {"checkpoint": {"storage": {"size": "5Gi", "whenJobDeleted": "Retain"}}},
            "PersistentVolumeClaim j-checkpoints (5Gi, kept after the job) at /checkpoints, on node 0's pod "
            "(rank 0)",
            False,
        ),
        (
            {"checkpoint": {"storage": {"existingClaim": "c", "accessModes": ["ReadWriteMany"]}}},
            "PersistentVolumeClaim c (existing claim) at /checkpoints, on every pod",
            False,
        ),
    ],
)
def test_checkpoint_location(fields: dict[str, Any], where: str, ephemeral: bool) -> None:
    assert storage.checkpoint_location(job(**fields)) == storage.Location(where, ephemeral)


def test_a_user_mount_at_the_dir_keeps_the_users_volume() -> None:
    j = job(volumes=[CLAIM], volumeMounts=AT_DIR)
    assert ckpt_volume(render_pod(j, 0, 0)) is None
    assert ckpt_mounts(render_pod(j, 0, 0)) == AT_DIR
    assert storage.ephemeral_warning(j) is None
    assert "set spec.checkpoint.storage" in str(storage.ephemeral_warning(job()))


@pytest.mark.parametrize(
    ("checkpoint", "extra", "field", "message"),
    [
        ({"storage": {}}, {}, "spec.checkpoint.storage", "set exactly one of size"),
        (
            {"storage": {"size": "1Gi", "existingClaim": "c"}},
            {},
            "spec.checkpoint.storage",
            "set exactly one of size",
        ),
        ({"storage": {"size": "0"}}, {}, "spec.checkpoint.storage.size", ""),
        ({"storage": {"size": "1Gi", "accessModes": ["ReadOnlyMany"]}}, {}, "spec.checkpoint.storage", ""),
        (
            {"storage": {"size": "1Gi"}},
            {"volumes": [CLAIM], "volumeMounts": AT_DIR},
            "spec.volumeMounts",
            "must not mount a volume at checkpoint.dir when checkpoint.storage is set",
        ),
    ],
)
def test_invalid_storage_is_rejected_naming_the_field(
    checkpoint: dict[str, Any], extra: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(spec.SpecError) as err:
        job(checkpoint=checkpoint, **extra)
    assert err.value.field.startswith(field)
    assert message in str(err.value)
