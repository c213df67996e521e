"""spec.managedBy: a job another controller manages (Kueue's MultiKueue) is left alone, and the field
cannot change sides after creation."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from .conftest import Jobs, OperatorProcess

MULTIKUEUE = "kueue.x-k8s.io/multikueue"


def test_a_job_managed_elsewhere_gets_nothing(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("theirs", managedBy=MULTIKUEUE)
    jobs.create("ours", managedBy="torchjob.dev/operator")
    # The operator has seen both creations (in order) once it has acted on the later one.
    jobs.wait_phase("ours", "Running")
    jobs.create("ours-too")  # and a third, to let any late handler of "theirs" run
    jobs.wait_phase("ours-too", "Running")

    theirs = jobs.get("theirs")
    assert "status" not in theirs
    assert not theirs["metadata"].get("finalizers")
    annotations = theirs["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("operator.torchjob.dev")]
    assert jobs.pods("theirs") == []
    with pytest.raises(client.ApiException) as missing:
        jobs.core.read_namespaced_service("theirs", jobs.ns)
    assert missing.value.status == 404
    assert jobs.events("theirs") == []
    assert "theirs" not in operator.output().replace("ours", "")


@pytest.mark.parametrize(
    ("created_with", "patch"),
    [
        (None, {"managedBy": MULTIKUEUE}),
        (MULTIKUEUE, {"managedBy": "torchjob.dev/operator"}),
        (MULTIKUEUE, {"managedBy": None}),
    ],
    ids=["set", "change", "remove"],
)
def test_managed_by_is_immutable(
    crd: object, jobs: Jobs, created_with: str | None, patch: dict[str, str | None]
) -> None:
    extra = {"managedBy": created_with} if created_with else {}
    jobs.create("fixed", **extra)
    with pytest.raises(client.ApiException) as rejected:
        jobs.patch_spec("fixed", patch)
    assert rejected.value.status == 422
    message = json.loads(rejected.value.body)["message"]
    assert "spec.managedBy" in message and "managedBy is immutable" in message, message
    assert jobs.get("fixed")["spec"].get("managedBy") == created_with
