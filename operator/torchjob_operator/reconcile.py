"""The operator's decision core: what to create, delete and report for one TrainingJob.

`decide(job, pods, status, now) -> Plan` is pure (no client, no clock): everything the job's policy
says lives here and is unit-tested table by table. `torchjob_operator.actuate` carries a Plan out.

Rules, in the order a pass applies them:
1. A finished job (Succeeded/Failed) only applies cleanPodPolicy (Failed pods are always kept for their
   logs) and, once `ttlSecondsAfterFinished` has passed since completionTime, deletes the TrainingJob.
2. `suspend: true` deletes every active pod, the PodGroup and the claim template, and sets Suspended;
   deadlines do not count while suspended. The spec may change while Suspended (CEL freezes it otherwise):
   the resume renders pods and those children from the spec as it is then.
3. activeDeadlineSeconds counts from startTime (first pods created; set again on resume, as Kubernetes
   Jobs do); startupDeadlineSeconds counts from the moment the current attempt's pods could first be
   created (startTime, or lastRestartTime plus its backoff, whichever is later) until every rank runs.
4. Success: `spec.runPolicy.successPolicy` holds over the current attempt's Succeeded pods
   (`torchjob_core.success_policy`): AllNodes (every node; the default of a fixed-size job), Node0
   (node 0, Kubeflow's "Master succeeded"), or AnyNode (the first node; the default of an elastic job,
   as torchrun ends every agent once the worker group finishes). The pods still running are then
   cleaned up per cleanPodPolicy. It comes before failures: once it holds the training is done, and a
   peer that failed meanwhile (in teardown) restarts nothing.
5. A failed pod of the current attempt decides the attempt: a permanent exit code fails the job at once;
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
6. Otherwise create missing pods of the current attempt and report Pending (with the blocking pod's
   reason) or Running (every rank running).

`decide` applies these as named functions over one `_Pass` (`_finished`, `_suspended`, `_past_deadline`,
`_succeeded`, `_failures`, `_create_missing`, then `_report`); when the job succeeded is
`torchjob_core.success_policy.after_success` and what follows a failure
`torchjob_core.failure_policy.after_failure`, the rules the CLI's local run uses too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from torchjob_core import constants, failure_policy, reasons, status, success_policy
from torchjob_core.render import meta, storage
from torchjob_core.spec import TrainingJob

from torchjob_operator import rootcause
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
    #: `delete` names every active pod of the job, so one DELETE of the collection (the job's pods that
    #: have not ended) does it: a 256-pod gang restart is one request instead of 255.
    delete_all_active: bool = False
    ensure_service: bool = False
    ensure_podgroup: bool = False
    ensure_claim_template: bool = False  # the GPUs' ResourceClaimTemplate (DRA), before any pod
    ensure_claim: bool = False  # the checkpoint PersistentVolumeClaim, before any pod
    #: Suspending: delete the PodGroup and the claim template (created once, never updated) with the pods,
    #: so that the resume creates them from the spec as it is then, which may have changed meanwhile.
    delete_pod_children: bool = False
    delete_job: bool = False
    events: list[Event] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None
    #: The plan acts on a failure whose only evidence is pods missing from the pod index: an index that
    #: lags (a standby resuming after a peering pause) looks the same, so the loop lists the job's pods
    #: from the API server and decides again with them before carrying this out.
    unconfirmed: bool = False

    def wake_at(self, seconds: float) -> None:
        if seconds >= 0 and (self.requeue_after is None or seconds < self.requeue_after):
            self.requeue_after = seconds


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


@dataclasses.dataclass
class _Pass:
    """One pass over one job: what it read, and the plan it builds."""

    job: TrainingJob
    pods: _Attempt
    observed: Mapping[str, Any]
    now: dt.datetime
    plan: Plan
    counts: dict[str, int]

    @property
    def phase(self) -> str:
        return str(self.observed.get("phase") or "")

    @property
    def start(self) -> dt.datetime | None:
        return status.parse_time(self.observed.get("startTime"))

    @property
    def attempt(self) -> int:
        return int(self.observed.get("attempt") or 0)

    def move(self, phase_to: str, reason_message: tuple[str, str]) -> None:
        reason, message = reason_message
        self.plan.status = status.with_phase(
            self.plan.status, phase_to, reason, message, now=self.now, generation=self.job.metadata.generation
        )

    def fail(self, reason_message: tuple[str, str]) -> None:
        _fail(self.job, self.pods, self.plan, self.now, reason_message)


def decide(
    job: TrainingJob,
    pods: Sequence[PodObs],
    observed: Mapping[str, Any],
    now: dt.datetime,
    *,
    children_deleted: bool = False,
) -> Plan:
    """The plan for one pass over `job` given its pods and its last written status: the first rule
    that applies (module docstring, in order) decides the pass; with none, it reports the pods.
    `children_deleted`: the job's Service or PodGroup was deleted since the last pass."""
    p = _begin(job, pods, observed, now)
    for rule in _RULES:
        if rule(p):
            break
    else:
        _report(p)
    _checkpoints(p)
    if children_deleted:
        _repair(p)
    return with_events(p.plan, observed)


def _repair(p: _Pass) -> None:
    """Re-create a deleted Service (the pods' DNS) and PodGroup at once while the job has pods to serve;
    creates are create-if-absent, so a needless repair costs one request and changes nothing."""
    phase = str(p.plan.status.get("phase") or "")
    if phase in status.TERMINAL_PHASES or phase == "Suspended":
        return
    _ensure_children(p)


def _ensure_children(p: _Pass) -> None:
    """The objects the job's pods name or need, created if absent with (or before) the pods."""
    p.plan.ensure_service = True
    p.plan.ensure_podgroup = p.job.spec.scheduling.gang
    p.plan.ensure_claim_template = p.job.spec.resources.gpu_device_class_name is not None


def _begin(job: TrainingJob, pods: Sequence[PodObs], observed: Mapping[str, Any], now: dt.datetime) -> _Pass:
    """Sort the pods into the current attempt and the stale rest; the status they report."""
    total = job.spec.nodes
    attempt = int(observed.get("attempt") or 0)
    replacements = [int(n) for n in observed.get("nodeReplacements") or []]
    pods_by_attempt = _split(job, pods, attempt, replacements)
    counts = pods_by_attempt.counts(total)
    st: dict[str, Any] = dict(observed)
    st.update(
        attempt=attempt,
        restartCount=int(observed.get("restartCount") or 0),
        nodes=counts,
        nodesReady=f"{counts['running']}/{total}",
        observedGeneration=job.metadata.generation,
    )
    if "replacingNodes" in observed:
        st["replacingNodes"] = [
            i for i in observed["replacingNodes"] or [] if i not in pods_by_attempt.current
        ]
    return _Pass(job, pods_by_attempt, observed, now, Plan(status=st), counts)


def _checkpoints(p: _Pass) -> None:
    """CheckpointsEphemeral, added with the job's first pods when its checkpoints die with their pod
    (True, plus one Warning Event: nothing is lost yet), then kept in step with the spec (False once it
    gives them storage). A job that always had storage never gets the condition."""
    location = storage.checkpoint_location(p.job)
    conditions = list(p.plan.status.get("conditions") or [])
    before = status.find(conditions, constants.CHECKPOINTS_EPHEMERAL)
    first_pods = bool(p.plan.create) and p.start is None and location.ephemeral
    if before is None and not first_pods:
        return
    template = reasons.CHECKPOINTS_IN_EMPTYDIR if location.ephemeral else reasons.CHECKPOINTS_PERSISTENT
    reason, message = template.format(where=location.where)
    p.plan.status["conditions"] = status.set_condition(
        conditions,
        constants.CHECKPOINTS_EPHEMERAL,
        "True" if location.ephemeral else "False",
        reason=reason,
        message=message,
        now=p.now,
        generation=p.job.metadata.generation,
    )
    if first_pods:
        p.plan.events.append(Event("Warning", reason, message))


def _finished(p: _Pass) -> bool:
    """A Succeeded or Failed job only cleans up (cleanPodPolicy) and expires (TTL)."""
    if p.phase not in status.TERMINAL_PHASES:
        return False
    _finish(p.job, p.pods, p.plan, p.now)
    return True


def _suspended(p: _Pass) -> bool:
    if not p.job.spec.run_policy.suspend:
        return False
    _delete_all_active(p.plan, p.pods)
    if p.phase != "Suspended":
        p.plan.delete_pod_children = (
            p.job.spec.scheduling.gang or p.job.spec.resources.gpu_device_class_name is not None
        )
    p.move("Suspended", reasons.SUSPENDED.format())
    return True


def _past_deadline(p: _Pass) -> bool:
    """activeDeadlineSeconds (not while suspended) and startupDeadlineSeconds; else wake at the next."""
    rp = p.job.spec.run_policy
    start = p.start
    if rp.active_deadline_seconds is not None and start is not None and p.phase != "Suspended":
        deadline = start + dt.timedelta(seconds=rp.active_deadline_seconds)
        if p.now >= deadline:
            p.fail(reasons.DEADLINE.format(seconds=rp.active_deadline_seconds))
            return True
        p.plan.wake_at(_seconds_until(deadline, p.now))
    since = _attempt_start(p.observed, rp.backoff_seconds)
    if p.phase in ("Created", "Pending") and rp.startup_deadline_seconds is not None and since is not None:
        deadline = since + dt.timedelta(seconds=rp.startup_deadline_seconds)
        if p.now >= deadline:
            detail = str(p.observed.get("message") or "pods pending")
            p.fail(reasons.STARTUP_DEADLINE.format(seconds=rp.startup_deadline_seconds, detail=detail))
            return True
        p.plan.wake_at(_seconds_until(deadline, p.now))
    return False


def _succeeded(p: _Pass) -> bool:
    """The job's successPolicy holds over the current attempt's Succeeded pods (`success_policy`):
    Succeeded, and the rest of the pods go as at any finish (cleanPodPolicy)."""
    current = p.pods.current
    succeeded = [i for i, pod in current.items() if pod.phase == "Succeeded"]
    policy = success_policy.SuccessPolicy.of(p.job)
    success = success_policy.after_success(policy, succeeded, nodes=p.job.spec.nodes)
    if success is None:
        return False
    p.plan.status["completionTime"] = status.timestamp(p.now)
    p.move("Succeeded", success.reason_message(lambda i: f"Pod {current[i].name}"))
    _finish(p.job, p.pods, p.plan, p.now)
    return True


def _create_missing(p: _Pass) -> bool:
    """Create the current attempt's missing pods once the backoff has passed and the pods of another
    attempt (or of a suspended run, same hostnames) are gone; True unless nothing is missing."""
    backoff_base = p.job.spec.run_policy.backoff_seconds
    ready_at = _attempt_start(p.observed, backoff_base)
    waiting = ready_at is not None and p.now < ready_at
    p.plan.delete = [pod.name for pod in p.pods.stale if pod.active]
    if p.phase == "Restarting" and waiting:
        assert ready_at is not None
        p.plan.wake_at(_seconds_until(ready_at, p.now))
        return True
    missing = [i for i in range(p.job.spec.nodes) if i not in p.pods.current]
    if not missing:
        return False
    # An ended pod that only a finalizer keeps (Kueue's, after it stopped the pods) runs nothing and
    # holds no hostname: waiting for it would wait for a finalizer released only once replacements exist.
    leaving = [pod for pod in p.pods.stale if (pod.active or pod.deleting) and not pod.ended]
    if p.phase == "Suspended":
        leaving += [pod for pod in p.pods.current.values() if pod.deleting and not pod.ended]
    if leaving:
        return True  # their deletion events wake the next pass
    if p.phase == "Running" and waiting:
        # Elastic node replacements wait out the same backoff as a gang restart.
        assert ready_at is not None
        p.plan.wake_at(_seconds_until(ready_at, p.now))
        return True
    _create(p, missing)
    return True


def _create(p: _Pass, missing: Sequence[int]) -> None:
    rp = p.job.spec.run_policy
    replacements = [int(n) for n in p.observed.get("nodeReplacements") or []]
    p.plan.create = [PodKey(i, p.attempt, _replacement(replacements, i)) for i in missing]
    _ensure_children(p)
    claim = p.job.spec.checkpoint.storage
    p.plan.ensure_claim = claim is not None and claim.creates_claim
    if p.start is None or p.phase == "Suspended":
        # Like a Kubernetes Job, a resumed job's clocks (both deadlines) start again.
        p.plan.status["startTime"] = status.timestamp(p.now)
        if rp.active_deadline_seconds is not None:
            p.plan.wake_at(float(rp.active_deadline_seconds))
    if rp.startup_deadline_seconds is not None and p.phase in ("", "Created", "Suspended", "Restarting"):
        p.plan.wake_at(float(rp.startup_deadline_seconds))
    created = reasons.PODS_CREATED.format(count=len(missing), attempt=p.attempt)
    if p.phase == "":
        p.move("Created", created)
    elif p.phase == "Suspended":
        p.move("Pending", reasons.RESUMED.format(count=len(missing), attempt=p.attempt))
    elif p.phase == "Restarting":
        p.move("Pending", created)


def _report(p: _Pass) -> None:
    """Every pod of the attempt exists: Running when every rank runs, else Pending and why."""
    if p.start is None:
        # The write that set startTime was lost (e.g. a conflict): the oldest pod says when it began.
        created = sorted(pod.created for pod in p.pods.current.values() if pod.created)
        p.plan.status["startTime"] = created[0] if created else status.timestamp(p.now)
    counts, total = p.counts, p.job.spec.nodes
    if counts["running"] == total or (counts["pending"] == 0 and counts["running"] > 0):
        if p.phase != "Running":
            p.plan.status["runningTime"] = status.timestamp(p.now)
        p.move("Running", reasons.ALL_RUNNING.format(total=total))
    elif p.phase == "Running" and counts["running"] >= _min_running(p.job):
        pass  # elastic: still training on the rest while a replaced node starts; its reason stays
    else:
        p.move("Pending", _pending_reason(p.pods, counts))


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
    # A member that only waits for its gang says less than a peer whose message names the shortage.
    for pod in sorted(pods.current.values(), key=lambda p: p.waits_for_gang):
        if pod.phase == "Pending" and pod.reason:
            reason, message = (
                pod.reason,
                reasons.POD_BLOCKED.template.format(pod=pod.name, message=pod.message),
            )
            return reason, message
    return reasons.PODS_PENDING.format(pending=counts["pending"], total=counts["total"])


def _failure_of(pod: PodObs) -> str:
    if pod.disrupted:
        return pod.reason or reasons.DISRUPTION_TARGET
    return f"exit code {pod.exit_code}"


@dataclasses.dataclass(frozen=True)
class _Lost:
    """The current attempt's pods that ended it: failed, deleted by someone else, or vanished."""

    failed: list[PodObs]
    gone: list[PodObs]  # deleted while not Failed: a drain, the eviction API, the pod GC
    vanished: list[PodKey]  # the current pods that disappeared while the job was Running
    disrupted: list[PodObs]  # pods with a DisruptionTarget condition (or an eviction reason)

    def __bool__(self) -> bool:
        return bool(self.failed or self.gone or self.vanished)

    def failure(self, pods: _Attempt, *, training: bool) -> failure_policy.Failure:
        return failure_policy.Failure(
            exits=[failure_policy.Exit(p.index, p.exit_code) for p in self.failed if p.exit_code is not None],
            lost=sorted({p.index for p in [*self.failed, *self.gone]} | {k.node for k in self.vanished}),
            running=[i for i, p in pods.current.items() if p.phase == "Running" and not p.deleting],
            disruption=bool(self.disrupted or self.gone or self.vanished),
            training=training,
        )

    def root(self) -> PodObs | PodKey:
        """The pod that ended the attempt (a vanished one: its key): a disruption first, else the
        failed pod whose trainer ended first (its peers' failures usually follow from it)."""
        if self.disrupted:
            return self.disrupted[0]
        if self.gone:
            return self.gone[0]
        if self.vanished:
            return self.vanished[0]
        return min(self.failed, key=lambda p: (p.finished or "~", p.name))

    def first(self, job: TrainingJob) -> tuple[str, str]:
        """The pod the Event names and why it went."""
        root = self.root()
        if isinstance(root, PodKey):
            return meta.pod_name(job, root.node, root.attempt, root.replacement), "pod deleted"
        if root.disrupted or root.phase == "Failed":
            return root.name, _failure_of(root)
        return root.name, "pod deleted"


def _lost(job: TrainingJob, pods: _Attempt, plan: Plan, phase: str, attempt: int) -> _Lost:
    # A node whose elastic replacement is not created (or not seen) yet has not vanished.
    replacing = set(plan.status.get("replacingNodes") or [])
    replacements = [int(n) for n in plan.status.get("nodeReplacements") or []]
    current = pods.current.values()
    return _Lost(
        failed=[p for p in current if p.phase == "Failed"],
        gone=[p for p in current if p.deleting and p.phase != "Failed"],
        vanished=[
            PodKey(i, attempt, _replacement(replacements, i))
            for i in range(job.spec.nodes)
            if i not in pods.current and i not in replacing
        ]
        if phase == "Running"
        else [],
        disrupted=[p for p in current if p.disrupted],
    )


def _failures(p: _Pass) -> bool:
    """A failed, deleted or vanished pod of the current attempt: carry out failure_policy's decision."""
    if p.phase == "Suspended":
        return False
    lost = _lost(p.job, p.pods, p.plan, p.phase, p.attempt)
    if not lost:
        return False
    p.plan.unconfirmed = not (lost.failed or lost.gone)
    restarts = int(p.observed.get("restartCount") or 0)
    counted = restarts - int(p.observed.get("disruptions") or 0)
    failure = lost.failure(p.pods, training=p.phase == "Running")
    policy = failure_policy.RestartPolicy.of(p.job)
    decision = failure_policy.after_failure(policy, failure, counted_restarts=counted)
    if decision.exit is not None:
        p.plan.status["lastExitCode"] = decision.exit.code
    p.plan.status["lastFailure"] = rootcause.record(p.job, lost.root(), p.attempt)
    first_pod, why = lost.first(p.job)
    if decision.action is failure_policy.Action.FAIL_PERMANENT:
        assert decision.exit is not None
        p.fail(_permanent(p.pods.current[decision.exit.node], decision.exit.code))
    elif decision.action is failure_policy.Action.FAIL_BACKOFF_LIMIT:
        limit = policy.backoff_limit
        p.fail(reasons.BACKOFF_LIMIT.format(pod=first_pod, why=why, count=decision.restarts, limit=limit))
    else:
        _restart(p, decision, failure.lost, pod=first_pod, why=why)
    return True


def _permanent(pod: PodObs, code: int) -> tuple[str, str]:
    known = failure_policy.trainer_exit_reason(code)
    if known is not None:
        reason, fallback = known
        return reason.format(pod=pod.name, code=code, message=pod.message.strip() or fallback)
    return reasons.PERMANENT_EXIT.format(pod=pod.name, code=code)


def _restart(
    p: _Pass, decision: failure_policy.Decision, lost: Collection[int], *, pod: str, why: str
) -> None:
    """Replace the `lost` nodes alone, or restart the gang: this pass only bumps `attempt` (persisted
    before any pod of the new attempt exists); later passes create its pods after the backoff."""
    plan, observed = p.plan, p.observed
    if decision.counted:
        budget = f"restart {decision.restarts}/{p.job.spec.run_policy.backoff_limit}"
    else:
        plan.status["disruptions"] = int(observed.get("disruptions") or 0) + 1
        budget = "not counted against backoffLimit"
    restarts = int(observed.get("restartCount") or 0)
    plan.status.update(restartCount=restarts + 1, lastRestartTime=status.timestamp(p.now))
    plan.wake_at(decision.delay_seconds)
    fields: dict[str, Any] = {"pod": pod, "why": why, "budget": budget, "delay": decision.delay_seconds}
    if decision.action is failure_policy.Action.REPLACE_ALONE:
        _replace_nodes(p.job, plan, lost)
        p.move("Running", reasons.NODE_REPLACED.format(nodes=", ".join(map(str, lost)), **fields))
        return
    plan.status.update(attempt=p.attempt + 1, nodeReplacements=[], replacingNodes=[])
    # Keep failed pods (their logs); stop the rest of the gang now.
    _delete_all_active(plan, p.pods)
    template = reasons.RETRYABLE_EXIT if decision.counted else reasons.DISRUPTED
    p.move("Restarting", template.format(**fields))


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


def _delete_all_active(plan: Plan, pods: _Attempt) -> None:
    plan.delete = [o.name for o in [*pods.current.values(), *pods.stale] if o.active]
    plan.delete_all_active = True


def _finish(job: TrainingJob, pods: _Attempt, plan: Plan, now: dt.datetime) -> None:
    """cleanPodPolicy and TTL for a finished job. Failed pods stay until the TTL deletes the job."""
    rp = job.spec.run_policy
    everything = [*pods.current.values(), *pods.stale]
    if rp.clean_pod_policy == "Running":
        _delete_all_active(plan, pods)
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


def blocked(
    job: TrainingJob, plan: Plan, why: tuple[str, str], observed: Mapping[str, Any], now: dt.datetime
) -> Plan:
    """The plan in place of `plan` when its pods cannot be created (an API they need is not served, or the
    API server rejected one): Pending with `why`, the same deletes, no creates, and another try in
    `constants.BLOCKED_RETRY_SECONDS`."""
    reason, message = why
    new_status = status.with_phase(
        plan.status, "Pending", reason, message, now=now, generation=job.metadata.generation
    )
    if not observed.get("startTime"):
        new_status.pop("startTime", None)  # nothing started
    retry = Plan(
        status=new_status,
        delete=plan.delete,
        delete_all_active=plan.delete_all_active,
        requeue_after=constants.BLOCKED_RETRY_SECONDS,
    )
    return with_events(retry, observed)


def with_events(plan: Plan, observed: Mapping[str, Any]) -> Plan:
    """One Event per transition: a new phase or reason, or a new gang restart."""
    new = plan.status
    changed = (new.get("phase"), new.get("reason")) != (observed.get("phase"), observed.get("reason"))
    restarted = int(new.get("restartCount") or 0) != int(observed.get("restartCount") or 0)
    if changed and not restarted and _quiet_progress(observed, new):
        return plan  # PodsCreated -> PodsPending: the status says so; an Event would be a write per job
    if (changed or restarted) and new.get("reason"):
        reason = str(new["reason"])
        # Pending for a pod-level reason (Unschedulable, ImagePullBackOff, ...) needs attention too.
        blocked = new.get("phase") == "Pending" and reason not in reasons.QUIET_PENDING_REASONS
        kind = "Warning" if reason in reasons.WARNING_REASONS or blocked else "Normal"
        plan.events.append(Event(kind, reason, str(new.get("message") or "")))
    return plan


def _quiet_progress(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Created or Pending to Pending, from one quiet reason to another (pods created, then pending):
    nothing to act on."""
    return (
        old.get("phase") in ("Created", "Pending")
        and new.get("phase") == "Pending"
        and old.get("reason") in reasons.QUIET_PENDING_REASONS
        and new.get("reason") in reasons.QUIET_PENDING_REASONS
    )


def invalid(job_status: Mapping[str, Any], error: str, *, generation: int, now: dt.datetime) -> Plan:
    """A manifest that admission let through but `spec.load` rejects: Failed, nothing created."""
    if job_status.get("phase") == "Failed":
        return Plan(status=dict(job_status))
    reason, message = reasons.INVALID_SPEC.format(error=error)
    st = status.with_phase(job_status, "Failed", reason, message, now=now, generation=generation)
    st["completionTime"] = status.timestamp(now)
    st["observedGeneration"] = generation
    return with_events(Plan(status=st), job_status)


# The rules a pass applies, in order; the first that applies decides it (see the module docstring).
_RULES: tuple[Callable[[_Pass], bool], ...] = (
    _finished,
    _suspended,
    _past_deadline,
    _succeeded,
    _failures,
    _create_missing,
)
