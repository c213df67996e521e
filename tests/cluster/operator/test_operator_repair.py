"""Children deleted by hand come back at once: the operator watches the Services and PodGroups its jobs
own, and a deletion pokes that job's loop, which re-creates them (create-if-absent)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess
from .test_operator_gang import coscheduling_api  # noqa: F401 (fixture)

GROUP = ("scheduling.x-k8s.io", "v1alpha1")


def uid_of(read: Callable[[], Any]) -> str | None:
    try:
        obj = read()
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str(obj.metadata.uid if hasattr(obj, "metadata") else obj["metadata"]["uid"])


def served(jobs: Jobs) -> bool:
    """A just-created CRD answers 429 (storage initializing) for a moment; the operator's watch must
    not start then, or it lists the PodGroup only after the test deleted it."""
    try:
        jobs.custom.list_namespaced_custom_object(*GROUP, jobs.ns, "podgroups")
    except client.ApiException as exc:
        if exc.status == 429:
            return False
        raise
    return True


def test_a_deleted_service_and_podgroup_come_back_within_seconds(
    coscheduling_api: None,  # noqa: F811 (fixture)
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
) -> None:
    eventually(lambda: served(jobs), 30, "the PodGroup API is served")
    start_operator()
    jobs.create("fix", nodes=2, scheduling={"gang": True, "gangScheduler": "coscheduling"})
    jobs.wait_phase("fix", "Running")

    def service() -> str | None:
        return uid_of(lambda: jobs.core.read_namespaced_service("fix", jobs.ns))

    def podgroup() -> str | None:
        return uid_of(lambda: jobs.custom.get_namespaced_custom_object(*GROUP, jobs.ns, "podgroups", "fix"))

    for read, delete in (
        (service, lambda: jobs.core.delete_namespaced_service("fix", jobs.ns)),
        (podgroup, lambda: jobs.custom.delete_namespaced_custom_object(*GROUP, jobs.ns, "podgroups", "fix")),
    ):
        before = read()
        assert before is not None
        delete()
        started = time.monotonic()
        eventually(lambda: read() not in (None, before), 10, "re-created")  # noqa: B023 (used at once)
        assert time.monotonic() - started < 10
    assert jobs.status("fix")["phase"] == "Running"
