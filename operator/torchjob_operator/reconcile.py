"""The operator's decision core: what to create, delete and report for one TrainingJob.

`decide(job, pods, status, now) -> Plan` is pure (no client, no clock): everything the job's policy
says lives here and is unit-tested table by table. `torchjob_operator.actuate` carries a Plan out.

Rules, in the order a pass applies them:
1. A finished job (Succeeded/Failed) only applies cleanPodPolicy (Failed pods are always kept for their
   logs) and, once `ttlSecondsAfterFinished` has passed since completionTime, deletes the TrainingJob.
2. `suspend: true` deletes every active pod and sets Suspended; deadlines do not count while suspended.
3. activeDeadlineSeconds counts from startTime (first pods created; set again on resume, as Kubernetes
   Jobs do); startupDeadlineSeconds counts from the moment the current attempt's pods could first be
   created (startTime, or lastRestartTime plus its backoff, whichever is later) until every rank runs.
4. A failed pod of the current attempt decides the attempt: a permanent exit code fails the job at once;
   a retryable one restarts the whole gang unless backoffLimit restarts were used. A disruption
   (DisruptionTarget condition, eviction, node loss, a pod deleted by someone else or vanished while the
   job was Running) restarts it too, without counting against backoffLimit (`status.disruptions`) and
   without failing the job for the exit codes of its peers. A restart only bumps `status.attempt`;
   pods of the new attempt are created by a later pass, after the status write succeeded, after the
   backoff, and after the old attempt's pods are gone.
   A Running elastic job replaces a lost node alone instead, when node 0 (the rendezvous host) still
   runs and so do at least minNodes nodes in all: torchrun on the survivors re-forms the worker group
   without it, and again with the replacement once it joins. That bumps
   `status.nodeReplacements[index]`, which names the replacement pod; it counts against backoffLimit
   exactly as a gang restart would.
5. Success: every node Succeeded (elastic jobs: the first node to succeed, as torchrun ends every agent
   once the worker group finishes).
6. Otherwise create missing pods of the current attempt and report Pending (with the blocking pod's
   reason) or Running (every rank running).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from torchjob_core import failure_policy, reasons, status
from torchjob_core.spec import TrainingJob

from torchjob_operator.observe import PodObs


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


class PodKey(NamedTuple):
    """Which pod to create: `node` of gang `attempt`, its `replacement`-th elastic replacement."""

    node: int
    attempt: int
    replacement: int = 0


@dataclasses.dataclass
class Plan:
    """What one pass does, in order: ensure Service/PodGroup, delete, create, write status, emit."""

    status: dict[str, Any]
    create: list[PodKey] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)  # pod names
    ensure_service: bool = False
    ensure_podgroup: bool = False
    delete_job: bool = False
    events: list[Event] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None

    def wake_at(self, seconds: float) -> None:
        if seconds >= 0 and (self.requeue_after is None or seconds < self.requeue_after):
            self.requeue_after = seconds


WARNING_REASONS = frozenset(
    {
        reasons.RETRYABLE_EXIT.reason,
        reasons.DISRUPTED.reason,
        reasons.NODE_REPLACED.reason,
        reasons.PERMANENT_EXIT.reason,
        reasons.BACKOFF_LIMIT.reason,
        reasons.DEADLINE.reason,
        reasons.STARTUP_DEADLINE.reason,
        reasons.INVALID_SPEC.reason,
        reasons.GANG_SCHEDULER_MISSING.reason,
    }
)


QUIET_PENDING_REASONS = frozenset(
    {reasons.PODS_PENDING.reason, reasons.RESUMED.reason, reasons.PODS_CREATED.reason}
)


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """The current attempt's pods and everything else (stale) the job owns."""

    current: dict[int, PodObs]
    stale: list[PodObs]

    def counts(self, total: int) -> dict[str, int]:
        pods = self.current.values()
        return {
            "total": total,
            "pending": sum(p.phase in ("Pending", "Unknown") and not p.deleting for p in pods),
            "running": sum(p.phase == "Running" and not p.deleting for p in pods),
            "succeeded": sum(p.phase == "Succeeded" for p in pods),
            "failed": sum(p.phase == "Failed" for p in pods),
        }


def _replacement(replacements: Sequence[int], index: int) -> int:
    return replacements[index] if 0 <= index < len(replacements) else 0


def _split(job: TrainingJob, pods: Sequence[PodObs], attempt: int, replacements: Sequence[int]) -> _Attempt:
    current: dict[int, PodObs] = {}
    stale: list[PodObs] = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.job != job.name:
            continue
        if (
            pod.attempt == attempt
            and pod.replacement == _replacement(replacements, pod.index)
            and 0 <= pod.index < job.spec.nodes
            and pod.index not in current
        ):
            current[pod.index] = pod
        else:
            stale.append(pod)
    return _Attempt(current, stale)


def _seconds_until(when: dt.datetime, now: dt.datetime) -> float:
    return max((when - now).total_seconds(), 0.0)


def decide(job: TrainingJob, pods: Sequence[PodObs], observed: Mapping[str, Any], now: dt.datetime) -> Plan:
    """The plan for one pass over `job` given its pods and its last written status."""
    rp = job.spec.run_policy
    total = job.spec.nodes
    gen = job.metadata.generation
    attempt = int(observed.get("attempt") or 0)
    restarts = int(observed.get("restartCount") or 0)
    phase = str(observed.get("phase") or "")
    replacements = [int(n) for n in observed.get("nodeReplacements") or []]
    pods_by_attempt = _split(job, pods, attempt, replacements)
    counts = pods_by_attempt.counts(total)
    replacing = [i for i in observed.get("replacingNodes") or [] if i not in pods_by_attempt.current]

    st: dict[str, Any] = dict(observed)
    st.update(
        attempt=attempt,
        restartCount=restarts,
        nodes=counts,
        nodesReady=f"{counts['running']}/{total}",
        observedGeneration=gen,
    )
    if "replacingNodes" in observed:
        st["replacingNodes"] = replacing
    plan = Plan(status=st)

    def move(phase_to: str, reason_message: tuple[str, str]) -> None:
        reason, message = reason_message
        plan.status = status.with_phase(plan.status, phase_to, reason, message, now=now, generation=gen)

    if phase in status.TERMINAL_PHASES:
        _finish(job, pods_by_attempt, plan, now)
        return with_events(plan, observed)

    if rp.suspend:
        plan.delete = [
            p.name for p in [*pods_by_attempt.current.values(), *pods_by_attempt.stale] if p.active
        ]
        move("Suspended", reasons.SUSPENDED.format())
        return with_events(plan, observed)

    start = status.parse_time(observed.get("startTime"))
    if rp.active_deadline_seconds is not None and start is not None and phase != "Suspended":
        deadline = start + dt.timedelta(seconds=rp.active_deadline_seconds)
        if now >= deadline:
            _fail(
                job, pods_by_attempt, plan, now, reasons.DEADLINE.format(seconds=rp.active_deadline_seconds)
            )
            return with_events(plan, observed)
        plan.wake_at(_seconds_until(deadline, now))

    if phase in ("Created", "Pending") and rp.startup_deadline_seconds is not None:
        since = _attempt_start(observed, rp.backoff_seconds)
        if since is not None:
            deadline = since + dt.timedelta(seconds=rp.startup_deadline_seconds)
            if now >= deadline:
                detail = str(observed.get("message") or "pods pending")
                reason_message = reasons.STARTUP_DEADLINE.format(
                    seconds=rp.startup_deadline_seconds, detail=detail
                )
                _fail(job, pods_by_attempt, plan, now, reason_message)
                return with_events(plan, observed)
            plan.wake_at(_seconds_until(deadline, now))

    if phase != "Suspended" and _handle_failures(job, pods_by_attempt, plan, observed, now, move=move):
        return with_events(plan, observed)

    succeeded = [p for p in pods_by_attempt.current.values() if p.phase == "Succeeded"]
    if job.spec.elastic is None and counts["succeeded"] == total:
        plan.status["completionTime"] = status.timestamp(now)
        move("Succeeded", reasons.SUCCEEDED.format(total=total))
        _finish(job, pods_by_attempt, plan, now)
        return with_events(plan, observed)
    if job.spec.elastic is not None and succeeded:
        plan.status["completionTime"] = status.timestamp(now)
        move("Succeeded", reasons.ELASTIC_SUCCEEDED.format(pod=succeeded[0].name))
        _finish(job, pods_by_attempt, plan, now)
        return with_events(plan, observed)

    if phase == "Restarting":
        ready_at = _attempt_start(observed, rp.backoff_seconds)
        if ready_at is not None and now < ready_at:
            plan.delete = [p.name for p in pods_by_attempt.stale if p.active]
            plan.wake_at(_seconds_until(ready_at, now))
            return with_events(plan, observed)

    # Pods of another attempt (or a suspended run) must be gone before their hostnames are reused.
    plan.delete = [p.name for p in pods_by_attempt.stale if p.active]
    leaving = [p for p in pods_by_attempt.stale if p.active or p.deleting]
    if phase == "Suspended":
        leaving += [p for p in pods_by_attempt.current.values() if p.deleting]
    missing = [i for i in range(total) if i not in pods_by_attempt.current]
    if missing and leaving:
        return with_events(plan, observed)  # their deletion events wake the next pass
    if missing and phase == "Running":
        # Elastic node replacements wait out the same backoff as a gang restart.
        ready_at = _attempt_start(observed, rp.backoff_seconds)
        if ready_at is not None and now < ready_at:
            plan.wake_at(_seconds_until(ready_at, now))
            return with_events(plan, observed)
    if missing:
        plan.create = [PodKey(i, attempt, _replacement(replacements, i)) for i in missing]
        plan.ensure_service = True
        plan.ensure_podgroup = job.spec.scheduling.gang
        if start is None or phase == "Suspended":
            # Like a Kubernetes Job, a resumed job's clocks (both deadlines) start again.
            plan.status["startTime"] = status.timestamp(now)
            if rp.active_deadline_seconds is not None:
                plan.wake_at(float(rp.active_deadline_seconds))
        if rp.startup_deadline_seconds is not None and phase in ("", "Created", "Suspended", "Restarting"):
            plan.wake_at(float(rp.startup_deadline_seconds))
        if phase == "":
            move("Created", reasons.PODS_CREATED.format(count=len(missing), attempt=attempt))
        elif phase == "Suspended":
            move("Pending", reasons.RESUMED.format(count=len(missing), attempt=attempt))
        elif phase == "Restarting":
            move("Pending", reasons.PODS_CREATED.format(count=len(missing), attempt=attempt))
        return with_events(plan, observed)

    if start is None:
        # The write that set startTime was lost (e.g. a conflict): the oldest pod says when it began.
        created = sorted(p.created for p in pods_by_attempt.current.values() if p.created)
        plan.status["startTime"] = created[0] if created else status.timestamp(now)
    if counts["running"] == total or (counts["pending"] == 0 and counts["running"] > 0):
        if phase != "Running":
            plan.status["runningTime"] = status.timestamp(now)
        move("Running", reasons.ALL_RUNNING.format(total=total))
    elif phase == "Running" and counts["running"] >= _min_running(job):
        pass  # elastic: still training on the rest while a replaced node starts; its reason stays
    else:
        move("Pending", _pending_reason(pods_by_attempt, counts))
    return with_events(plan, observed)


def _attempt_start(observed: Mapping[str, Any], backoff_base: int) -> dt.datetime | None:
    """When the current attempt's pods could first be created (disruptions do not grow the backoff)."""
    restarts = int(observed.get("restartCount") or 0)
    counted = restarts - int(observed.get("disruptions") or 0)
    restarted = status.parse_time(observed.get("lastRestartTime"))
    started = status.parse_time(observed.get("startTime"))
    if restarts > 0 and restarted is not None:
        after_backoff = restarted + dt.timedelta(
            seconds=failure_policy.backoff_seconds(max(counted, 1), backoff_base)
        )
        return max(after_backoff, started) if started is not None else after_backoff
    return started


def _pending_reason(pods: _Attempt, counts: Mapping[str, int]) -> tuple[str, str]:
    for pod in pods.current.values():
        if pod.phase == "Pending" and pod.reason:
            reason, message = (
                pod.reason,
                reasons.POD_BLOCKED.template.format(pod=pod.name, message=pod.message),
            )
            return reason, message
    return reasons.PODS_PENDING.format(pending=counts["pending"], total=counts["total"])


def _failure_of(pod: PodObs) -> str:
    if pod.disrupted:
        return pod.reason or "DisruptionTarget"
    return f"exit code {pod.exit_code}"


@dataclasses.dataclass(frozen=True)
class _Lost:
    """The current attempt's pods that ended it: failed, deleted by someone else, or vanished."""

    failed: list[PodObs]
    gone: list[PodObs]  # deleted while not Failed: a drain, the eviction API, the pod GC
    vanished: list[int]  # node indexes whose pod disappeared while the job was Running
    disrupted: list[PodObs]  # pods with a DisruptionTarget condition (or an eviction reason)

    def __bool__(self) -> bool:
        return bool(self.failed or self.gone or self.vanished)

    def failure(self, pods: _Attempt, *, training: bool) -> failure_policy.Failure:
        return failure_policy.Failure(
            exits=[failure_policy.Exit(p.index, p.exit_code) for p in self.failed if p.exit_code is not None],
            lost=sorted({p.index for p in [*self.failed, *self.gone]} | set(self.vanished)),
            running=[i for i, p in pods.current.items() if p.phase == "Running" and not p.deleting],
            disruption=bool(self.disrupted or self.gone or self.vanished),
            training=training,
        )

    def first(self, job: TrainingJob) -> tuple[str, str]:
        """The pod the Event names and why it went, the disruption first."""
        if self.disrupted:
            return self.disrupted[0].name, _failure_of(self.disrupted[0])
        if self.gone:
            return self.gone[0].name, "pod deleted"
        if self.vanished:
            return f"{job.name}-node-{self.vanished[0]}", "pod deleted"
        return self.failed[0].name, _failure_of(self.failed[0])


def _lost(job: TrainingJob, pods: _Attempt, plan: Plan, phase: str) -> _Lost:
    # A node whose elastic replacement is not created (or not seen) yet has not vanished.
    replacing = set(plan.status.get("replacingNodes") or [])
    current = pods.current.values()
    return _Lost(
        failed=[p for p in current if p.phase == "Failed"],
        gone=[p for p in current if p.deleting and p.phase != "Failed"],
        vanished=[i for i in range(job.spec.nodes) if i not in pods.current and i not in replacing]
        if phase == "Running"
        else [],
        disrupted=[p for p in current if p.disrupted],
    )


def _handle_failures(
    job: TrainingJob,
    pods: _Attempt,
    plan: Plan,
    observed: Mapping[str, Any],
    now: dt.datetime,
    *,
    move: Any,
) -> bool:
    """Carry out failure_policy's decision on a failed (or vanished) pod of the current attempt; True
    if there was one."""
    phase = str(observed.get("phase") or "")
    lost = _lost(job, pods, plan, phase)
    if not lost:
        return False
    failure = lost.failure(pods, training=phase == "Running")
    restarts = int(observed.get("restartCount") or 0)
    disruptions = int(observed.get("disruptions") or 0)
    decision = failure_policy.after_failure(
        failure_policy.RestartPolicy.of(job), failure, counted_restarts=restarts - disruptions
    )
    if decision.exit is not None:
        plan.status["lastExitCode"] = decision.exit.code
    first_pod, why = lost.first(job)
    limit = job.spec.run_policy.backoff_limit
    if decision.action is failure_policy.Action.FAIL_PERMANENT:
        assert decision.exit is not None
        pod = pods.current[decision.exit.node]
        _fail(job, pods, plan, now, reasons.PERMANENT_EXIT.format(pod=pod.name, code=decision.exit.code))
        return True
    if decision.action is failure_policy.Action.FAIL_BACKOFF_LIMIT:
        reason_message = reasons.BACKOFF_LIMIT.format(
            pod=first_pod, why=why, count=decision.restarts, limit=limit
        )
        _fail(job, pods, plan, now, reason_message)
        return True

    if decision.counted:
        budget = f"restart {decision.restarts}/{limit}"
    else:
        plan.status["disruptions"] = disruptions + 1
        budget = "not counted against backoffLimit"
    plan.status.update(restartCount=restarts + 1, lastRestartTime=status.timestamp(now))
    plan.wake_at(decision.delay_seconds)
    fields: dict[str, Any] = {"pod": first_pod, "why": why, "budget": budget, "delay": decision.delay_seconds}
    if decision.action is failure_policy.Action.REPLACE_ALONE:
        _replace_nodes(job, plan, failure.lost)
        move("Running", reasons.NODE_REPLACED.format(nodes=", ".join(map(str, failure.lost)), **fields))
        return True
    plan.status.update(attempt=int(observed.get("attempt") or 0) + 1, nodeReplacements=[], replacingNodes=[])
    # Keep failed pods (their logs); stop the rest of the gang now.
    plan.delete = [p.name for p in [*pods.current.values(), *pods.stale] if p.active]
    template = reasons.RETRYABLE_EXIT if decision.counted else reasons.DISRUPTED
    move("Restarting", template.format(**fields))
    return True


def _min_running(job: TrainingJob) -> int:
    """How many running nodes keep a job training: all of them, or elastic minNodes."""
    return job.spec.nodes if job.spec.elastic is None else job.spec.elastic.min_nodes


def _replace_nodes(job: TrainingJob, plan: Plan, lost: Collection[int]) -> None:
    replacements = [int(n) for n in plan.status.get("nodeReplacements") or []]
    replacements += [0] * (job.spec.nodes - len(replacements))
    for index in lost:
        replacements[index] += 1
    plan.status["nodeReplacements"] = replacements
    plan.status["replacingNodes"] = sorted(set(plan.status.get("replacingNodes") or []) | set(lost))


def _fail(
    job: TrainingJob, pods: _Attempt, plan: Plan, now: dt.datetime, reason_message: tuple[str, str]
) -> None:
    reason, message = reason_message
    plan.status["completionTime"] = status.timestamp(now)
    plan.status = status.with_phase(
        plan.status, "Failed", reason, message, now=now, generation=job.metadata.generation
    )
    _finish(job, pods, plan, now)


def _finish(job: TrainingJob, pods: _Attempt, plan: Plan, now: dt.datetime) -> None:
    """cleanPodPolicy and TTL for a finished job. Failed pods stay until the TTL deletes the job."""
    rp = job.spec.run_policy
    everything = [*pods.current.values(), *pods.stale]
    if rp.clean_pod_policy == "Running":
        plan.delete = [p.name for p in everything if p.active]
    elif rp.clean_pod_policy == "All":
        plan.delete = [p.name for p in everything if p.phase != "Failed" and not p.deleting]
    else:
        plan.delete = []
    plan.create = []
    if rp.ttl_seconds_after_finished is None:
        return
    done = status.parse_time(plan.status.get("completionTime")) or now
    expires = done + dt.timedelta(seconds=rp.ttl_seconds_after_finished)
    if now >= expires:
        plan.delete_job = True
    else:
        plan.wake_at(_seconds_until(expires, now))


def with_events(plan: Plan, observed: Mapping[str, Any]) -> Plan:
    """One Event per transition: a new phase or reason, or a new gang restart."""
    new = plan.status
    changed = (new.get("phase"), new.get("reason")) != (observed.get("phase"), observed.get("reason"))
    restarted = int(new.get("restartCount") or 0) != int(observed.get("restartCount") or 0)
    if (changed or restarted) and new.get("reason"):
        reason = str(new["reason"])
        # Pending for a pod-level reason (Unschedulable, ImagePullBackOff, ...) needs attention too.
        blocked = new.get("phase") == "Pending" and reason not in QUIET_PENDING_REASONS
        kind = "Warning" if reason in WARNING_REASONS or blocked else "Normal"
        plan.events.append(Event(kind, reason, str(new.get("message") or "")))
    return plan


def invalid(job_status: Mapping[str, Any], error: str, *, generation: int, now: dt.datetime) -> Plan:
    """A manifest that admission let through but `spec.load` rejects: Failed, nothing created."""
    if job_status.get("phase") == "Failed":
        return Plan(status=dict(job_status))
    reason, message = reasons.INVALID_SPEC.format(error=error)
    st = status.with_phase(job_status, "Failed", reason, message, now=now, generation=generation)
    st["completionTime"] = status.timestamp(now)
    st["observedGeneration"] = generation
    return with_events(Plan(status=st), job_status)
