"""jobloop.one_pass + actuate against a hand-written fake API: request counts, ordering, idempotence;
the loops' shared state and the runtime in Kopf's memo."""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pytest
from torchjob_operator import actuate, handlers, jobloop, metrics
from torchjob_operator.budget import TokenBucket
from torchjob_operator.errors import ClaimsUnavailableError, PodGroupUnavailableError, PodRejectedError
from torchjob_operator.observe import PodObs, observe_pod
from torchjob_operator.settings import Settings

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Key = tuple[str, str]


class FakeApi:
    """Stores pods and the job; records every call like the real one counts requests."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.pods: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.claims: dict[str, dict[str, Any]] = {}
        self.rv = 10

    async def create_pod(self, job: Key, body: Mapping[str, Any]) -> bool:
        self.calls.append(("create", "pod"))
        name = body["metadata"]["name"]
        if name in self.pods:
            return False
        self.pods[name] = copy.deepcopy(dict(body)) | {"status": {"phase": "Pending"}}
        return True

    async def delete_pod(self, job: Key, name: str) -> None:
        self.calls.append(("delete", "pod"))
        self.pods.pop(name, None)

    async def delete_active_pods(self, job: Key) -> None:
        self.calls.append(("deletecollection", "pod"))
        ended = ("Failed", "Succeeded")
        self.pods = {n: p for n, p in self.pods.items() if p["status"].get("phase") in ended}

    async def ensure_service(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "service"))

    async def ensure_podgroup(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "podgroup"))

    async def ensure_claim_template(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "resourceclaimtemplate"))

    async def delete_podgroup(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("delete", "podgroup"))

    async def delete_claim_template(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("delete", "resourceclaimtemplate"))

    async def ensure_claim(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "persistentvolumeclaim"))
        self.claims[body["metadata"]["name"]] = copy.deepcopy(dict(body))

    async def patch_status(
        self, job: Key, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        self.calls.append(("patch", "status"))
        assert resource_version == self.job["metadata"]["resourceVersion"]
        self.rv += 1
        self.job["status"] = copy.deepcopy(dict(status))
        self.job["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.job)

    async def delete_job(self, job: Key) -> None:
        self.calls.append(("delete", "job"))

    async def post_event(self, job: Key, uid: str, kind: str, reason: str, message: str) -> None:
        self.calls.append(("create", "event"))
        self.events.append((kind, reason))

    async def list_pods(self, job: Key) -> list[dict[str, Any]]:
        self.calls.append(("list", "pod"))
        return copy.deepcopy(list(self.pods.values()))

    def observed(self) -> list[PodObs]:
        return [observe_pod(p) for p in self.pods.values()]

    def set_all(self, phase: str, exit_code: int | None = None) -> None:
        for pod in self.pods.values():
            pod["status"] = {"phase": phase}
            if exit_code is not None:
                pod["status"]["containerStatuses"] = [
                    {"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}
                ]


def job_body(nodes: int, **run_policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "u",
            "generation": 1,
            "resourceVersion": "10",
            "finalizers": ["operator.torchjob.dev/finalizer"],
        },
        "spec": {"image": "img", "nodes": nodes, "runPolicy": {"backoffSeconds": 1, **run_policy}},
    }


def new_state() -> jobloop.JobState:
    return jobloop.JobState(inflight=actuate.InFlight(), bucket=TokenBucket(capacity=1000, rate=1000))


def run_pass(
    api: FakeApi, state: jobloop.JobState, at: float, pods: list[PodObs] | None = None
) -> float | None:
    body = copy.deepcopy(api.job)
    return asyncio.run(
        jobloop.one_pass(
            body,
            api.observed() if pods is None else pods,
            api,
            state,
            now=lambda: T0 + dt.timedelta(seconds=at),
            clock=lambda: at,
        )
    )


def job_with_claim(nodes: int, **storage: Any) -> dict[str, Any]:
    body = job_body(nodes)
    body["spec"]["checkpoint"] = {"storage": storage or {"existingClaim": "ckpt"}}
    return body


def test_normal_job_stays_within_its_request_budget() -> None:
    nodes = 4
    # Checkpoints on the user's claim; the default emptyDir adds one Warning Event (test below).
    api, state = FakeApi(job_with_claim(nodes)), new_state()
    transitions = 0
    run_pass(api, state, 1)  # Created
    transitions += 1
    api.set_all("Running")
    run_pass(api, state, 2)  # Running
    transitions += 1
    run_pass(api, state, 3)  # nothing changed: no requests
    api.set_all("Succeeded", 0)
    run_pass(api, state, 4)  # Succeeded
    transitions += 1
    run_pass(api, state, 5)
    assert api.job["status"]["phase"] == "Succeeded"
    assert [r for _, r in api.events] == ["PodsCreated", "AllRanksRunning", "JobSucceeded"]
    # Pods once, one Service, one status write and one Event per transition.
    assert len(api.calls) == nodes + 1 + 2 * transitions
    assert len(api.calls) <= nodes + 6 * transitions


def test_ephemeral_checkpoints_add_one_warning_event_with_the_first_pods() -> None:
    api, state = FakeApi(job_body(2)), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    run_pass(api, state, 3)
    assert api.events == [
        ("Warning", "CheckpointsInEmptyDir"),
        ("Normal", "PodsCreated"),
        ("Normal", "AllRanksRunning"),
    ]
    cond = next(c for c in api.job["status"]["conditions"] if c["type"] == "CheckpointsEphemeral")
    assert cond["status"] == "True" and cond["reason"] == "CheckpointsInEmptyDir"
    assert "an emptyDir at /checkpoints" in cond["message"]
    assert len(api.calls) == 2 + 1 + 2 * 2 + 1


def test_the_checkpoint_claim_is_created_once_before_the_pods() -> None:
    api, state = FakeApi(job_with_claim(2, size="10Gi")), new_state()
    run_pass(api, state, 1)
    assert api.calls[0] == ("create", "persistentvolumeclaim")
    assert list(api.claims) == ["j-checkpoints"]
    assert api.claims["j-checkpoints"]["metadata"]["ownerReferences"][0]["uid"] == "u"
    api.set_all("Running")
    run_pass(api, state, 2)
    assert api.calls.count(("create", "persistentvolumeclaim")) == 1
    assert all(c["type"] != "CheckpointsEphemeral" for c in api.job["status"]["conditions"])


def test_stale_index_does_not_duplicate_creates() -> None:
    api, state = FakeApi(job_body(3)), new_state()
    run_pass(api, state, 1)
    run_pass(api, state, 1.5, pods=[])  # the watch has not shown the new pods yet
    assert [c for c in api.calls if c == ("create", "pod")] == [("create", "pod")] * 3


def test_restart_persists_the_attempt_before_new_pods_and_uses_the_written_status() -> None:
    api, state = FakeApi(job_body(2)), new_state()
    run_pass(api, state, 1)
    stale_body = copy.deepcopy(api.job)
    api.set_all("Running")
    run_pass(api, state, 2)
    next(iter(api.pods.values()))["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 137}}}],
    }
    run_pass(api, state, 3)
    assert api.job["status"]["attempt"] == 1
    assert sorted(api.pods) == ["j-node-0-r0"]  # the failed pod is kept; no r1 pods yet
    # A lagging watch body (older resourceVersion) must not undo the restart.
    asyncio.run(
        jobloop.one_pass(
            stale_body,
            api.observed(),
            api,
            state,
            now=lambda: T0 + dt.timedelta(seconds=10),
            clock=lambda: 10,
        )
    )
    assert sorted(api.pods) == ["j-node-0-r0", "j-node-0-r1", "j-node-1-r1"]
    assert api.job["status"]["restartCount"] == 1


def test_a_gang_restart_stops_the_gang_with_one_collection_delete() -> None:
    api, state = running_job(4)
    api.pods["j-node-2-r0"]["status"] = {"phase": "Failed"}
    calls = len(api.calls)
    run_pass(api, state, 3)
    assert api.job["status"]["phase"] == "Restarting"
    # One request stops the three survivors; the failed pod stays for its logs.
    assert api.calls[calls:].count(("deletecollection", "pod")) == 1
    assert ("delete", "pod") not in api.calls and sorted(api.pods) == ["j-node-2-r0"]
    run_pass(api, state, 10)
    assert sorted(api.pods) == sorted(["j-node-2-r0", *(f"j-node-{i}-r1" for i in range(4))])


def test_one_pod_to_stop_is_one_plain_delete() -> None:
    api, state = running_job(2)
    api.pods["j-node-1-r0"]["status"] = {"phase": "Failed"}
    run_pass(api, state, 3)
    assert ("delete", "pod") in api.calls and ("deletecollection", "pod") not in api.calls


def test_budget_defers_a_pass_instead_of_splitting_it() -> None:
    api = FakeApi(job_body(4))
    state = jobloop.JobState(inflight=actuate.InFlight(), bucket=TokenBucket(capacity=8, rate=1, tokens=2))
    due = run_pass(api, state, 1)
    assert api.calls == [] and due is not None and due > 0
    run_pass(api, state, 1 + due)
    assert len(api.pods) == 4


def test_invalid_spec_reports_failed_without_children() -> None:
    body = job_body(1)
    body["spec"]["nodes"] = 0
    api, state = FakeApi(body), new_state()
    run_pass(api, state, 1)
    assert api.job["status"]["phase"] == "Failed" and api.job["status"]["reason"] == "InvalidSpec"
    assert api.pods == {}


def test_waits_for_kopfs_finalizer_before_writing() -> None:
    api, state = FakeApi(job_body(1)), new_state()
    api.job["metadata"]["finalizers"] = []
    assert run_pass(api, state, 1) == 1.0
    assert api.calls == []


class NoGangScheduler(FakeApi):
    async def ensure_podgroup(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "podgroup"))
        raise PodGroupUnavailableError("scheduling.volcano.sh/v1beta1 podgroups is not served")


def test_gang_without_its_scheduler_creates_no_pod_and_says_why() -> None:
    body = job_body(2)
    body["spec"]["scheduling"] = {"gang": True}
    api, state = NoGangScheduler(body), new_state()
    assert run_pass(api, state, 1) == 30.0
    assert api.pods == {}
    assert (api.job["status"]["phase"], api.job["status"]["reason"]) == ("Pending", "GangSchedulerMissing")
    assert api.events == [("Warning", "GangSchedulerMissing")]


def jobs_in(phase: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("torchjob_operator_jobs", {"phase": phase})


def test_loops_wake_running_jobs_and_count_their_phases() -> None:
    loops, key = jobloop.Loops(), ("ns", "j")
    loops.wake(key)  # no loop runs for it: nothing to poke, nothing registered
    assert loops.wakers == {}

    async def poke() -> bool:
        event = loops.waker(key)
        loops.wake(key)
        return event.is_set()

    assert asyncio.run(poke())
    loops.set_phase(key, "Running")
    loops.set_phase(("ns", "k"), "Running")
    assert jobs_in("Running") == 2
    loops.forget(key)
    assert jobs_in("Running") == 1 and key not in loops.wakers
    loops.forget(("ns", "k"))
    assert jobs_in("Running") == 0


def test_a_loop_publishes_its_phase_and_forgets_the_job_when_stopped() -> None:
    api, loops = FakeApi(job_body(2)), jobloop.Loops()
    passes: list[str | None] = []

    def stopped() -> bool:  # asked before each pass and again once it has its slot
        passes.append(loops.phases.get(("ns", "j")))
        return passes[-1] is not None

    asyncio.run(
        jobloop.run(
            ("ns", "j"),
            copy.deepcopy(api.job),
            api.observed,
            api,
            Settings(resync_seconds=0.01),
            loops=loops,
            logger=logging.getLogger("test"),
            conflict=lambda exc: False,
            stopped=stopped,
        )
    )
    assert passes == [None, None, "Created"]  # the phase is published after the pass
    assert loops.wakers == {} and loops.phases == {}


def test_the_runtime_travels_in_kopfs_memo() -> None:
    runtime = handlers.OperatorRuntime()
    per_object = copy.copy(runtime.memo())  # Kopf gives each object a shallow copy of the operator's memo
    assert handlers.runtime_of(per_object) is runtime

    async def poke() -> bool:
        event = runtime.loops.waker(("ns", "j"))
        await handlers.job_changed(name="j", namespace="ns", memo=per_object)
        return event.is_set()

    assert asyncio.run(poke())
    with pytest.raises(TypeError):
        handlers.runtime_of(kopf.Memo())


def test_gpus_through_dra_create_the_claim_template_before_the_pods() -> None:
    body = job_body(2)
    body["spec"]["resources"] = {"gpusPerNode": 2, "gpuDeviceClassName": "gpu.example.com"}
    api, state = FakeApi(body), new_state()
    run_pass(api, state, 1)
    assert api.calls[:3] == [("create", "resourceclaimtemplate"), ("create", "pod"), ("create", "pod")]
    api.set_all("Running")
    run_pass(api, state, 2)  # nothing to create: the template is not asked for again
    assert api.calls.count(("create", "resourceclaimtemplate")) == 1


class NoDra(FakeApi):
    async def ensure_claim_template(self, job: Key, body: Mapping[str, Any]) -> None:
        self.calls.append(("create", "resourceclaimtemplate"))
        raise ClaimsUnavailableError("resource.k8s.io/v1 resourceclaimtemplates is not served")


def test_gpus_through_dra_without_the_api_create_no_pod_and_say_why() -> None:
    body = job_body(2)
    body["spec"]["resources"] = {"gpusPerNode": 2, "gpuDeviceClassName": "gpu.example.com"}
    api, state = NoDra(body), new_state()
    assert run_pass(api, state, 1) == 30.0
    assert api.pods == {}
    st = api.job["status"]
    assert (st["phase"], st["reason"]) == ("Pending", "DeviceClaimsUnavailable")
    assert "resourceclaimtemplates is not served" in st["message"]
    assert api.events == [("Warning", "DeviceClaimsUnavailable")]


class QuotaApi(FakeApi):
    """Admits `room` pods, then answers as ResourceQuota admission does."""

    def __init__(self, body: dict[str, Any], room: int) -> None:
        super().__init__(body)
        self.room = room

    async def create_pod(self, job: Key, body: Mapping[str, Any]) -> bool:
        if len(self.pods) >= self.room:
            self.calls.append(("create", "pod"))
            name = body["metadata"]["name"]
            raise PodRejectedError(
                name,
                403,
                f'pods "{name}" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, '
                "limited: pods=1",
            )
        return await super().create_pod(job, body)


def test_a_rejected_pod_create_reaches_status_and_backs_off() -> None:
    api, state = QuotaApi(job_with_claim(2), room=1), new_state()
    assert run_pass(api, state, 1) == 5.0
    st = api.job["status"]
    assert (st["phase"], st["reason"]) == ("Pending", "QuotaExceeded")
    assert st["message"].startswith("The API server rejected pod j-node-1-r0 (403): pods ")
    assert "exceeded quota: q" in st["message"]
    assert "startTime" not in st
    assert api.events == [("Warning", "QuotaExceeded")]
    assert list(api.pods) == ["j-node-0-r0"]

    # Our own status write wakes the loop at once: it waits out the backoff without a request.
    calls = len(api.calls)
    assert run_pass(api, state, 2) == 4.0
    assert len(api.calls) == calls
    # After it, one more try, rejected the same way: the backoff doubles and no second Event (the write
    # is node 0's pod now counted as pending).
    assert run_pass(api, state, 6) == 10.0
    assert sorted(api.calls[calls:]) == [("create", "pod"), ("create", "service"), ("patch", "status")]
    assert api.events == [("Warning", "QuotaExceeded")]
    calls = len(api.calls)
    assert run_pass(api, state, 7) == 9.0
    assert len(api.calls) == calls

    api.room = 2  # the quota was raised
    run_pass(api, state, 16)
    assert sorted(api.pods) == ["j-node-0-r0", "j-node-1-r0"]
    assert state.rejections == 0
    api.set_all("Running")
    run_pass(api, state, 17)
    assert api.job["status"]["phase"] == "Running"


def test_a_deleted_child_marks_only_a_running_loop_and_its_next_pass_repairs_it() -> None:
    loops = jobloop.Loops()
    loops.child_deleted(("ns", "gone"))  # no loop: nothing to remember
    assert not loops.deleted_children
    event = loops.waker(("ns", "j"))
    loops.child_deleted(("ns", "j"))
    assert event.is_set() and loops.take_child_deletion(("ns", "j"))
    assert not loops.take_child_deletion(("ns", "j"))

    api, state = FakeApi(job_with_claim(1)), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    calls = len(api.calls)
    state.children_deleted = True
    run_pass(api, state, 3)
    assert api.calls[calls:] == [("create", "service")]
    assert not state.children_deleted
    run_pass(api, state, 4)
    assert len(api.calls) == calls + 1


def running_job(nodes: int) -> tuple[FakeApi, jobloop.JobState]:
    api, state = FakeApi(job_body(nodes)), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    assert api.job["status"]["phase"] == "Running"
    return api, state


def test_pods_missing_only_from_a_lagging_index_restart_nothing() -> None:
    # A standby resuming after a peering pause: its index has not caught up, the API server has the pods.
    api, state = running_job(2)
    before, calls = copy.deepcopy(api.job["status"]), len(api.calls)
    run_pass(api, state, 3, pods=[])
    assert api.calls[calls:] == [("list", "pod")]  # one LIST, then nothing to do
    assert api.job["status"] == before and sorted(api.pods) == ["j-node-0-r0", "j-node-1-r0"]
    run_pass(api, state, 4)  # the index caught up: no LIST, no request at all
    assert len(api.calls) == calls + 1


def test_pods_missing_from_the_api_server_too_restart_the_gang() -> None:
    api, state = running_job(2)
    del api.pods["j-node-1-r0"]
    calls = len(api.calls)
    run_pass(api, state, 3)  # neither the index nor the API server has node 1
    assert api.calls[calls] == ("list", "pod")
    assert api.job["status"]["phase"] == "Restarting" and api.job["status"]["attempt"] == 1
    assert api.job["status"]["disruptions"] == 1
    assert ("Warning", "PodDisrupted") in api.events


def test_the_confirming_list_waits_for_the_budget() -> None:
    api, state = running_job(2)
    state.bucket = TokenBucket(capacity=8, rate=1, tokens=0, stamp=3)
    calls = len(api.calls)
    due = run_pass(api, state, 3, pods=[])
    assert due is not None and due > 0 and len(api.calls) == calls


async def loop_of(loops: jobloop.Loops, name: str, *, stopped: Callable[[], bool]) -> None:
    """A job's loop with no pods, for tests that replace `one_pass`."""
    await jobloop.run(
        ("ns", name),
        {"metadata": {"name": name}, "spec": {"nodes": 1}},
        list,
        FakeApi(job_body(1)),
        Settings(),
        loops=loops,
        logger=logging.getLogger("test"),
        conflict=lambda exc: False,
        stopped=stopped,
    )


@pytest.mark.parametrize("slots", [1, 2])
def test_job_passes_share_the_operators_slots(slots: int, monkeypatch: pytest.MonkeyPatch) -> None:
    loops, running, most = jobloop.Loops(max_passes=slots), 0, 0
    passes: collections.Counter[str] = collections.Counter()

    async def one_pass(body: dict[str, Any], *_: Any, **__: Any) -> float:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        passes[body["metadata"]["name"]] += 1
        return 0.0

    monkeypatch.setattr(jobloop, "one_pass", one_pass)

    async def three_jobs() -> None:
        await asyncio.gather(
            *(
                loop_of(loops, name, stopped=lambda name=name: passes[name] >= 3)  # type: ignore[misc]
                for name in ("a", "b", "c")
            )
        )

    asyncio.run(three_jobs())
    assert most == slots and sum(passes.values()) == 9


def test_a_loop_stopped_while_it_waits_for_a_slot_makes_no_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    loops, passes, stop = jobloop.Loops(max_passes=1), [], [False]

    async def one_pass(*_: Any, **__: Any) -> float:
        passes.append(1)
        return 0.0

    monkeypatch.setattr(jobloop, "one_pass", one_pass)

    async def deleted_while_waiting() -> None:
        async with loops.passes:  # another job's pass holds the only slot
            loop = asyncio.create_task(loop_of(loops, "j", stopped=lambda: stop[0]))
            await asyncio.sleep(0.01)
            stop[0] = True  # the job is deleted meanwhile
        await asyncio.wait_for(loop, 1)

    asyncio.run(deleted_while_waiting())
    assert passes == [] and ("ns", "j") not in loops.wakers


# Lifecycle counters: each transition counted exactly once, after the status write that records it.


def finished(namespace: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "torchjob_operator_jobs_finished_total", {"namespace": namespace, "outcome": outcome}
    )
    return value or 0.0


def restarts(namespace: str, reason: str) -> float:
    """Restarts of both scopes in `namespace` for `reason`."""
    return sum(
        metrics.REGISTRY.get_sample_value(
            "torchjob_operator_restarts_total", {"namespace": namespace, "scope": scope, "reason": reason}
        )
        or 0.0
        for scope in metrics.RESTART_SCOPES
    )


def in_namespace(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Each test counts in a namespace of its own: the registry is the process's."""
    body["metadata"]["namespace"] = namespace
    return body


def exit_pod(api: FakeApi, name: str, code: int) -> None:
    api.pods[name]["status"] = {
        "phase": "Failed" if code else "Succeeded",
        "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": code}}}],
    }


def test_a_finished_job_is_counted_once_not_on_re_reconcile_rewrite_or_operator_restart() -> None:
    api, state = FakeApi(in_namespace(job_body(2), "fin-ok")), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    assert finished("fin-ok", "Succeeded") == 0
    api.set_all("Succeeded", 0)
    run_pass(api, state, 3)
    assert api.job["status"]["phase"] == "Succeeded"
    assert (finished("fin-ok", "Succeeded"), finished("fin-ok", "Failed")) == (1, 0)
    run_pass(api, state, 4)  # re-reconcile: nothing to write
    # A status re-write of the finished job (a pod gone: its counts change) is no new transition.
    del api.pods["j-node-1-r0"]
    writes = api.calls.count(("patch", "status"))
    run_pass(api, state, 5)
    assert api.calls.count(("patch", "status")) == writes + 1
    # A restarted operator (nothing remembered) reads the finished status back and counts nothing.
    run_pass(api, new_state(), 6)
    assert (finished("fin-ok", "Succeeded"), finished("fin-ok", "Failed")) == (1, 0)


def test_a_failed_job_and_an_invalid_spec_count_as_failed_once() -> None:
    api, state = FakeApi(in_namespace(job_body(2), "fin-fail")), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    exit_pod(api, "j-node-0-r0", 1)  # a permanent exit code
    run_pass(api, state, 3)
    assert api.job["status"]["phase"] == "Failed"
    run_pass(api, state, 4)
    run_pass(api, new_state(), 5)
    assert (finished("fin-fail", "Failed"), finished("fin-fail", "Succeeded")) == (1, 0)

    body = in_namespace(job_body(1), "fin-invalid")
    body["spec"]["nodes"] = 0
    api, state = FakeApi(body), new_state()
    run_pass(api, state, 1)
    assert api.job["status"]["reason"] == "InvalidSpec"
    run_pass(api, state, 2)
    run_pass(api, new_state(), 3)
    assert finished("fin-invalid", "Failed") == 1


class ConflictOnce(FakeApi):
    """The first status write conflicts (409): someone changed the job since the pass read it."""

    conflicts = 1

    async def patch_status(
        self, job: Key, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        if status.get("phase") == "Succeeded" and self.conflicts:
            self.conflicts -= 1
            raise RuntimeError("409 Conflict")
        return await super().patch_status(job, status, resource_version)


def test_a_status_write_that_fails_counts_nothing_and_its_retry_counts_once() -> None:
    api, state = ConflictOnce(in_namespace(job_body(1), "fin-409")), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    api.set_all("Succeeded", 0)
    with pytest.raises(RuntimeError, match="409"):
        run_pass(api, state, 3)
    assert finished("fin-409", "Succeeded") == 0 and api.job["status"]["phase"] == "Running"
    state.written = None  # what the loop does after a conflict
    run_pass(api, state, 4)
    run_pass(api, state, 5)
    assert finished("fin-409", "Succeeded") == 1


class EventsDown(FakeApi):
    """Status writes succeed; posting the Event of a finished job fails."""

    async def post_event(self, job: Key, uid: str, kind: str, reason: str, message: str) -> None:
        if reason == "JobSucceeded":
            raise RuntimeError("503 Service Unavailable")
        await super().post_event(job, uid, kind, reason, message)


def test_a_failed_event_after_the_write_neither_loses_nor_repeats_the_count() -> None:
    api, state = EventsDown(in_namespace(job_body(1), "fin-event")), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    stale = copy.deepcopy(api.job)  # the watch has not shown the Succeeded write yet
    api.set_all("Succeeded", 0)
    with pytest.raises(RuntimeError, match="503"):
        run_pass(api, state, 3)
    assert api.job["status"]["phase"] == "Succeeded"
    assert finished("fin-event", "Succeeded") == 1  # counted at the write
    writes = api.calls.count(("patch", "status"))
    # The retried pass, on the lagging watch body, knows the job is written Succeeded: nothing again.
    asyncio.run(jobloop.one_pass(stale, api.observed(), api, state, now=lambda: T0, clock=lambda: 4))
    assert api.calls.count(("patch", "status")) == writes
    assert finished("fin-event", "Succeeded") == 1


def test_gang_restarts_are_counted_once_by_reason() -> None:
    api, state = FakeApi(in_namespace(job_body(2, backoffLimit=3), "rs-gang")), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    exit_pod(api, "j-node-1-r0", 137)  # a retryable exit code
    run_pass(api, state, 3)
    assert (api.job["status"]["phase"], api.job["status"]["attempt"]) == ("Restarting", 1)
    run_pass(api, state, 3.5)  # re-reconcile during the backoff
    run_pass(api, new_state(), 3.6)  # a restarted operator
    assert (restarts("rs-gang", "retryable_exit"), restarts("rs-gang", "disruption")) == (1, 0)

    run_pass(api, state, 10)  # attempt 1's pods
    api.set_all("Running")
    run_pass(api, state, 11)
    del api.pods["j-node-0-r1"]  # vanished with its node, confirmed by the LIST: a disruption
    run_pass(api, state, 12)
    assert api.job["status"]["disruptions"] == 1
    run_pass(api, state, 12.5)
    run_pass(api, new_state(), 12.6)
    assert (restarts("rs-gang", "retryable_exit"), restarts("rs-gang", "disruption")) == (1, 1)


def test_elastic_node_replacements_are_counted_once_by_reason() -> None:
    body = in_namespace(job_body(3, backoffLimit=3), "rs-node")
    body["spec"]["elastic"] = {"minNodes": 1, "maxNodes": 3}
    api, state = FakeApi(body), new_state()
    run_pass(api, state, 1)
    api.set_all("Running")
    run_pass(api, state, 2)
    exit_pod(api, "j-node-2-r0", 137)
    run_pass(api, state, 3)
    st = api.job["status"]
    assert (st["phase"], st["reason"], st["nodeReplacements"]) == ("Running", "NodeReplaced", [0, 0, 1])
    run_pass(api, state, 10)  # the replacement pod
    run_pass(api, new_state(), 11)
    assert (restarts("rs-node", "retryable_exit"), restarts("rs-node", "disruption")) == (1, 0)

    api.pods["j-node-2-r0-1"]["status"] = {"phase": "Running"}
    api.pods["j-node-1-r0"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:12Z"  # someone deletes it
    run_pass(api, state, 12)
    assert api.job["status"]["nodeReplacements"] == [0, 1, 1]
    run_pass(api, state, 12.5)
    assert (restarts("rs-node", "retryable_exit"), restarts("rs-node", "disruption")) == (1, 1)
    assert api.job["status"]["attempt"] == 0  # replacements alone: the gang never restarted


def test_a_job_loop_creates_its_namespaces_counters_at_zero() -> None:
    api = FakeApi(in_namespace(job_body(1), "fresh-ns"))
    asyncio.run(
        jobloop.run(
            ("fresh-ns", "j"),
            copy.deepcopy(api.job),
            api.observed,
            api,
            Settings(),
            loops=jobloop.Loops(),
            logger=logging.getLogger("test"),
            conflict=lambda exc: False,
            stopped=lambda: True,
        )
    )
    for outcome in ("Succeeded", "Failed"):
        labels = {"namespace": "fresh-ns", "outcome": outcome}
        assert metrics.REGISTRY.get_sample_value("torchjob_operator_jobs_finished_total", labels) == 0
    for scope in ("gang", "node"):
        for reason in ("retryable_exit", "disruption"):
            labels = {"namespace": "fresh-ns", "scope": scope, "reason": reason}
            assert metrics.REGISTRY.get_sample_value("torchjob_operator_restarts_total", labels) == 0
