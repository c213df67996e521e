"""Carry out a reconcile Plan through an `Api` (k8s.KubeApi in production, a fake in tests).

Order: what the new pods name first (the PodGroup: a gang must exist before its pods; the GPUs'
ResourceClaimTemplate under DRA; the checkpoint PersistentVolumeClaim), then deletes, then the Service and
the creates together, then ONE status write, and Events only after that write succeeded. Creates and
deletes the operator made recently but the watch does not show yet are not repeated (`InFlight`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from torchjob_core import reasons
from torchjob_core.render.claims import render_claim_template
from torchjob_core.render.podgroup import render_podgroup
from torchjob_core.render.pods import render_pod
from torchjob_core.render.service import render_service
from torchjob_core.render.storage import render_claim
from torchjob_core.spec import TrainingJob

from torchjob_operator import reconcile, rejections
from torchjob_operator.errors import ApiUnavailableError, PodRejectedError

JobKey = tuple[str, str]


class Api(Protocol):
    async def create_pod(self, job: JobKey, body: Mapping[str, Any]) -> bool: ...
    async def delete_pod(self, job: JobKey, name: str) -> None: ...
    async def delete_active_pods(self, job: JobKey) -> None: ...
    async def ensure_service(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def ensure_podgroup(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def ensure_claim_template(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def ensure_claim(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def delete_podgroup(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def delete_claim_template(self, job: JobKey, body: Mapping[str, Any]) -> None: ...
    async def patch_status(
        self, job: JobKey, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]: ...
    async def delete_job(self, job: JobKey) -> None: ...
    async def post_event(self, job: JobKey, uid: str, kind: str, reason: str, message: str) -> None: ...
    async def list_pods(self, job: JobKey) -> list[dict[str, Any]]: ...


@dataclasses.dataclass
class InFlight:
    """Pod names this operator created or deleted, until the watch catches up (or `ttl` passes)."""

    ttl: float = 30.0
    created: dict[str, float] = dataclasses.field(default_factory=dict)
    deleted: dict[str, float] = dataclasses.field(default_factory=dict)

    def settle(self, visible: set[str], now: float) -> None:
        """Forget creates the watch has shown and deletes it has confirmed, and anything too old."""
        self.created = {n: t for n, t in self.created.items() if n not in visible and now - t < self.ttl}
        self.deleted = {n: t for n, t in self.deleted.items() if n in visible and now - t < self.ttl}


@dataclasses.dataclass
class Outcome:
    plan: reconcile.Plan  # what was carried out (differs from the input when the gang scheduler is missing)
    created: int = 0
    deleted: int = 0
    status: dict[str, Any] | None = None  # the job body returned by the status write
    job_deleted: bool = False
    rejected: PodRejectedError | None = None  # the first pod create the API server refused


#: Told of a status write as soon as it succeeded, before its Events: the status written and the job body
#: the write returned. What a transition counts is counted there (`jobloop`): an Event that fails afterwards
#: fails the pass, and the next pass must find the transition written, not make (or count) it again.
Written = Callable[[Mapping[str, Any], dict[str, Any]], None]

#: The requests of the one pod LIST that confirms a vanished-only failure (`reconcile.Plan.unconfirmed`).
CONFIRM_COST = 1


def cost(plan: reconcile.Plan, status_changed: bool) -> int:
    """Upper bound of the API requests a plan makes (for the per-job budget; a confirming LIST is
    counted before it is made, apart: `CONFIRM_COST`)."""
    ensures = sum(
        map(int, (plan.ensure_service, plan.ensure_podgroup, plan.ensure_claim_template, plan.ensure_claim))
    )
    deletes = min(len(plan.delete), 1) if plan.delete_all_active else len(plan.delete)
    deletes += 2 * int(plan.delete_pod_children)
    return (
        ensures + len(plan.create) + deletes + int(status_changed) + len(plan.events) + int(plan.delete_job)
    )


async def execute(
    job: TrainingJob,
    plan: reconcile.Plan,
    api: Api,
    *,
    observed_status: Mapping[str, Any],
    resource_version: str | None,
    inflight: InFlight,
    now: float,
    wall_now: dt.datetime,
    written: Written = lambda status, body: None,
) -> Outcome:
    key = (job.namespace, job.name)
    out = Outcome(plan=plan)
    if plan.delete_job:
        await api.delete_job(key)
        out.job_deleted = True
        return out

    plan = out.plan = await _ensure_named_objects(job, plan, api, observed_status, wall_now)
    deletes = [name for name in plan.delete if name not in inflight.deleted]
    if plan.delete_all_active and len(deletes) > 1:
        await api.delete_active_pods(key)
    else:
        await asyncio.gather(*(api.delete_pod(key, name) for name in deletes))
    for name in deletes:
        inflight.deleted[name] = now
    out.deleted = len(deletes)
    if plan.delete_pod_children:
        await _delete_pod_children(job, api)

    bodies = [render_pod(job, key.node, key.attempt, key.replacement) for key in plan.create]
    bodies = [b for b in bodies if b["metadata"]["name"] not in inflight.created]
    # The Service goes with the pods, not before them: pods do not need it to be created.
    creates = asyncio.gather(*(api.create_pod(key, body) for body in bodies), return_exceptions=True)
    if plan.ensure_service:
        _, results = await asyncio.gather(api.ensure_service(key, render_service(job)), creates)
    else:
        results = await creates
    out.created = _settle_creates(bodies, results, inflight, now, out)
    if out.rejected is not None:
        plan = _rejected(job, plan, out.rejected, observed_status, wall_now)
        out.plan = plan

    if plan.status != dict(observed_status):
        out.status = await api.patch_status(key, plan.status, resource_version)
        written(plan.status, out.status)
        # Events only after the write: a failed write repeats the transition, and its Event, next pass.
        for event in plan.events:
            await api.post_event(key, job.metadata.uid, event.type, event.reason, event.message)
    return out


def _settle_creates(
    bodies: list[dict[str, Any]], results: list[Any], inflight: InFlight, now: float, out: Outcome
) -> int:
    """Count the creates; remember those that went through (only those: a rejected pod is tried again).
    The first rejection goes to `out.rejected`; any other error is raised after all creates finished."""
    created = 0
    for body, result in zip(bodies, results, strict=True):
        if isinstance(result, PodRejectedError):
            out.rejected = out.rejected or result
        elif isinstance(result, BaseException):
            raise result
        else:
            inflight.created[body["metadata"]["name"]] = now
            created += int(result)
    return created


def _rejected(
    job: TrainingJob,
    plan: reconcile.Plan,
    error: PodRejectedError,
    observed: Mapping[str, Any],
    now: dt.datetime,
) -> reconcile.Plan:
    """Pending with the cause as reason and the API's message; the job loop holds creates (backoff)."""
    _, message = reasons.POD_REJECTED.format(pod=error.pod, code=error.code, message=error.message)
    return reconcile.blocked(
        job, plan, (rejections.reason(error.code, error.message), message), observed, now
    )


async def _delete_pod_children(job: TrainingJob, api: Api) -> None:
    """The job's PodGroup and claim template as its spec renders them (delete-if-present)."""
    key = (job.namespace, job.name)
    if (podgroup := render_podgroup(job)) is not None:
        await api.delete_podgroup(key, podgroup)
    if (claim_template := render_claim_template(job)) is not None:
        await api.delete_claim_template(key, claim_template)


async def _ensure_named_objects(
    job: TrainingJob, plan: reconcile.Plan, api: Api, observed: Mapping[str, Any], now: dt.datetime
) -> reconcile.Plan:
    """The PodGroup, claim template and checkpoint claim the new pods name, before them. When an API is
    missing, create no pods and say why: a gang would start piecemeal, and pods naming a missing template
    never schedule."""
    key = (job.namespace, job.name)
    podgroup = render_podgroup(job) if plan.ensure_podgroup else None
    claim_template = render_claim_template(job) if plan.ensure_claim_template else None
    try:
        if podgroup is not None:
            await api.ensure_podgroup(key, podgroup)
        if claim_template is not None:
            await api.ensure_claim_template(key, claim_template)
    except ApiUnavailableError as exc:
        return reconcile.blocked(job, plan, exc.reason.format(error=str(exc)), observed, now)
    checkpoint_claim = render_claim(job) if plan.ensure_claim else None
    if checkpoint_claim is not None:
        # A pod whose claim does not exist yet is unschedulable until it does.
        await api.ensure_claim(key, checkpoint_claim)
    return plan
