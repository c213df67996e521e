"""One serialized reconcile loop per TrainingJob.

Kopf runs `run()` as a daemon per job. A pass reads the job body and the pods index, asks
`reconcile.decide` for a plan, carries it out, and then waits until a pod or job event pokes the job
(`Loops.wake`) or the plan's requeue time (or the resync interval) passes. Only one pass of a job runs at
a time, so the status it writes is never raced by itself. What the loops share (their wake-up events,
each job's phase for the jobs gauge) is one `Loops` object, owned by the operator's runtime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torchjob_core import constants, spec, status

from torchjob_operator import actuate, metrics, progress, reconcile, rejections
from torchjob_operator.budget import TokenBucket
from torchjob_operator.observe import PodObs, observe_pod
from torchjob_operator.settings import Settings

JobKey = tuple[str, str]


@dataclasses.dataclass
class Loops:
    """The running job loops: the event that wakes each, each job's last phase (the jobs gauge), and the
    slots their passes share (`Settings.max_concurrent_passes`)."""

    max_passes: dataclasses.InitVar[int] = Settings.max_concurrent_passes
    wakers: dict[JobKey, asyncio.Event] = dataclasses.field(default_factory=dict)
    phases: dict[JobKey, str] = dataclasses.field(default_factory=dict)
    #: Jobs whose Service or PodGroup was deleted since their loop's last pass.
    deleted_children: set[JobKey] = dataclasses.field(default_factory=set)
    passes: asyncio.Semaphore = dataclasses.field(init=False)

    def __post_init__(self, max_passes: int) -> None:
        # Measured at 1,000 jobs: every loop passing at once held its rendered pods and pending requests
        # while it waited on the client rate limit.
        self.passes = asyncio.Semaphore(max_passes)

    def wake(self, key: JobKey) -> None:
        """Poke a job's loop (called from watch-event handlers); nothing if it is not running."""
        event = self.wakers.get(key)
        if event is not None:
            event.set()

    def child_deleted(self, key: JobKey) -> None:
        """A job's Service or PodGroup is gone: its next pass re-creates it."""
        if key in self.wakers:
            self.deleted_children.add(key)
            self.wake(key)

    def take_child_deletion(self, key: JobKey) -> bool:
        if key in self.deleted_children:
            self.deleted_children.discard(key)
            return True
        return False

    def waker(self, key: JobKey) -> asyncio.Event:
        return self.wakers.setdefault(key, asyncio.Event())

    def set_phase(self, key: JobKey, phase: str) -> None:
        if self.phases.get(key) != phase:
            self.phases[key] = phase
            metrics.set_phases(self.phases)

    def forget(self, key: JobKey) -> None:
        self.wakers.pop(key, None)
        self.phases.pop(key, None)
        self.deleted_children.discard(key)
        metrics.set_phases(self.phases)


def _rv(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


@dataclasses.dataclass
class JobState:
    """What a job's loop remembers between passes (lost on restart; the API has the truth)."""

    inflight: actuate.InFlight
    bucket: TokenBucket
    #: The job body our last status write returned: newer than the watch until the watch catches up.
    written: dict[str, Any] | None = None
    #: The phase of the last plan carried out (None before the first).
    phase: str | None = None
    #: Passes in a row whose pod creates the API server rejected, and when creating may be tried again.
    rejections: int = 0
    creates_held_until: float = 0.0
    #: The Service or PodGroup was deleted: the next pass that runs re-creates them.
    children_deleted: bool = False
    #: When this job last read its progress, the read slot it holds, the read in flight.
    pacing: progress.JobPacing = dataclasses.field(default_factory=progress.JobPacing)
    #: Wakes this job's loop (a finished progress read).
    wake: Callable[[], None] = lambda: None

    def spend(self, cost: int, now: float) -> float:
        """Take `cost` requests from the job's budget; else the seconds until it has them (nothing taken):
        a pass is deferred whole, never split."""
        wait = self.bucket.wait_time(cost, now)
        if wait <= 0:
            self.bucket.take(cost, now)
        return wait

    def note_creates(self, outcome: actuate.Outcome, now: float) -> float | None:
        """Back off after a rejected create (our own status write wakes the loop at once, and an
        unchanged rejection writes nothing); the delay until creating again, None when not rejected."""
        if outcome.rejected is None:
            if outcome.created:
                self.rejections = 0
            return None
        self.rejections += 1
        delay = rejections.backoff_seconds(self.rejections)
        self.creates_held_until = now + delay
        return delay


def _freshest(body: Mapping[str, Any], state: JobState) -> Mapping[str, Any]:
    # resourceVersions are opaque by contract, but etcd's are increasing integers; if they ever are not,
    # _rv returns -1 and the watch body wins.
    if state.written is not None:
        written_rv = _rv(state.written.get("metadata", {}).get("resourceVersion"))
        body_rv = _rv(body.get("metadata", {}).get("resourceVersion"))
        if written_rv > body_rv >= 0:
            merged = dict(body)
            merged["status"] = state.written.get("status") or {}
            merged["metadata"] = state.written.get("metadata") or {}
            return merged
        state.written = None
    return body


async def one_pass(
    body: Mapping[str, Any],
    pods: Iterable[PodObs],
    api: actuate.Api,
    state: JobState,
    *,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    clock: Callable[[], float] = time.monotonic,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    reader: progress.Reader | None = None,
) -> float | None:
    """Run one pass; return the seconds until the next one is due (None: only on an event)."""
    body = _freshest(body, state)
    observed: dict[str, Any] = dict(body.get("status") or {})
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if constants.FINALIZER not in (meta.get("finalizers") or []):
        # Kopf adds its finalizer concurrently with the daemon's start; a write before it lands would
        # conflict. Its watch event wakes us.
        return 1.0
    pod_list = list(pods)
    state.inflight.settle({p.name for p in pod_list}, clock())
    try:
        job = spec.load(body)
    except spec.SpecError as exc:
        await _report_invalid(key, meta, observed, str(exc), api=api, state=state, now=now())
        return None

    decided = await _decide(job, pod_list, observed, api, state, now=now(), clock=clock())
    if not isinstance(decided, tuple):
        return decided  # the budget defers the confirming LIST
    plan, pod_list = decided
    if plan.create and clock() < state.creates_held_until:
        return state.creates_held_until - clock()  # a rejected create's backoff
    changed = plan.status != observed
    read_due = _progress(reader, job, pod_list, plan, state=state, clock=clock())
    wait = state.spend(actuate.cost(plan, changed), clock())
    if wait > 0:
        return wait

    def written(new_status: Mapping[str, Any], returned: dict[str, Any]) -> None:
        state.written = returned
        _record(meta, observed, new_status, now())

    outcome = await actuate.execute(
        job,
        plan,
        api,
        observed_status=observed,
        resource_version=str(meta.get("resourceVersion") or "") or None,
        inflight=state.inflight,
        now=clock(),
        wall_now=now(),
        written=written,
    )
    _carried_out(outcome, state)
    if outcome.job_deleted:
        return None
    held = state.note_creates(outcome, clock())
    if logger is not None:
        _log(logger, outcome, changed, held)
    return _sooner(held if held is not None else outcome.plan.requeue_after, read_due)


def _carried_out(outcome: actuate.Outcome, state: JobState) -> None:
    """What the loop keeps and counts once a plan was carried out (its status write: `_record`)."""
    state.children_deleted = False  # carried out (a pass that raises or waits keeps it for the next)
    metrics.PODS_CREATED.inc(outcome.created)
    state.phase = str(outcome.plan.status.get("phase") or "")


async def _decide(
    job: spec.TrainingJob,
    pods: list[PodObs],
    observed: Mapping[str, Any],
    api: actuate.Api,
    state: JobState,
    *,
    now: dt.datetime,
    clock: float,
) -> tuple[reconcile.Plan, list[PodObs]] | float:
    """The pass's plan and the pods it was decided on; or the seconds until the budget allows the LIST.

    Pods missing from the index are weak evidence: a standby resuming after a peering pause (or any
    lagging watch) has not yet seen pods created meanwhile, and restarting on that view would restart a
    healthy job. So a failure with no other evidence is decided again on the API server's own list."""
    plan = reconcile.decide(job, pods, observed, now, children_deleted=state.children_deleted)
    if not plan.unconfirmed:
        return plan, pods
    wait = state.spend(actuate.CONFIRM_COST, clock)
    if wait > 0:
        return wait
    listed = [observe_pod(p) for p in await api.list_pods((job.namespace, job.name))]
    # Pods really gone: the same failure, carried out as before. Pods there: the index lags; this pass
    # acts on the list (usually nothing to do) and a later one on the caught-up index.
    plan = reconcile.decide(job, listed, observed, now, children_deleted=state.children_deleted)
    return plan, listed


def _sooner(*due: float | None) -> float | None:
    """The earliest of the times a pass is due (None: only on an event)."""
    return min((d for d in due if d is not None), default=None)


def _log(
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    outcome: actuate.Outcome,
    changed: bool,
    held: float | None,
) -> None:
    if outcome.created or outcome.deleted or changed:
        logger.info(
            "phase=%s attempt=%s created=%d deleted=%d",
            outcome.plan.status.get("phase"),
            outcome.plan.status.get("attempt"),
            outcome.created,
            outcome.deleted,
        )
    if held is not None:
        logger.warning("pod create rejected (retry in %.0fs): %s", held, outcome.rejected)


def _progress(
    reader: progress.Reader | None,
    job: spec.TrainingJob,
    pods: list[PodObs],
    plan: reconcile.Plan,
    *,
    state: JobState,
    clock: float,
) -> float | None:
    """Progress rides on the pass's one status write: a finished read's figures go into the plan's status;
    seconds until the next read is due."""
    if reader is None:
        return None
    return reader.update(job, pods, plan.status, state.pacing, clock=clock, wake=state.wake)


async def _report_invalid(
    key: JobKey,
    meta: Mapping[str, Any],
    observed: Mapping[str, Any],
    error: str,
    *,
    api: actuate.Api,
    state: JobState,
    now: dt.datetime,
) -> None:
    """A manifest `spec.load` rejects: status Failed/InvalidSpec (once), and its Event."""
    plan = reconcile.invalid(observed, error, generation=int(meta.get("generation") or 0), now=now)
    if plan.status == observed:
        return
    state.written = await api.patch_status(key, plan.status, str(meta.get("resourceVersion") or ""))
    _record(meta, observed, plan.status, now)
    for event in plan.events:
        await api.post_event(key, str(meta.get("uid") or ""), event.type, event.reason, event.message)


def _record(
    meta: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], now: dt.datetime
) -> None:
    """Count the transitions a status write just recorded: `old` is the status the pass was decided on,
    `new` the one written. Called only after the write succeeded (and a write whose status changed
    nothing is not made), and a later pass decides on the written status, so each transition is counted
    once: not again on a re-reconcile, a status re-write, or a restarted operator (which reads it back)."""
    namespace = str(meta.get("namespace") or "")
    if int(new.get("restartCount") or 0) > int(old.get("restartCount") or 0):
        gang = int(new.get("attempt") or 0) > int(old.get("attempt") or 0)
        disrupted = int(new.get("disruptions") or 0) > int(old.get("disruptions") or 0)
        metrics.RESTARTS.labels(
            namespace=namespace,
            scope="gang" if gang else "node",
            reason="disruption" if disrupted else "retryable_exit",
        ).inc()
    if new.get("runningTime") and not old.get("runningTime"):
        created = status.parse_time(meta.get("creationTimestamp"))
        if created is not None:
            metrics.SUBMIT_TO_RUNNING.observe(max((now - created).total_seconds(), 0.0))
    phase = new.get("phase")
    if phase in status.TERMINAL_PHASES and old.get("phase") not in status.TERMINAL_PHASES:
        metrics.JOBS_FINISHED.labels(namespace=namespace, outcome=str(phase)).inc()


async def run(
    key: JobKey,
    body: Mapping[str, Any],
    pods: Callable[[], Iterable[PodObs]],
    api: actuate.Api,
    settings: Settings,
    *,
    loops: Loops,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    conflict: Callable[[BaseException], bool],
    stopped: Callable[[], bool] = lambda: False,
    reader: progress.Reader | None = None,
) -> None:
    """The daemon body: passes until `stopped()` (job deleted or operator stopping; `loops.wake` it then)."""
    nodes = int((body.get("spec") or {}).get("nodes") or 1)
    event = loops.waker(key)
    state = JobState(
        inflight=actuate.InFlight(ttl=settings.inflight_seconds),
        bucket=TokenBucket(capacity=settings.budget.burst(nodes), rate=settings.budget.per_second),
        wake=event.set,
    )
    failures = 0
    metrics.namespace_seen(key[0])
    try:
        while not stopped():
            event.clear()
            async with loops.passes:  # a slot first; then pods(): the pass sees them as they are when it runs
                if stopped():
                    break  # deleted (or the operator stopping) while this loop waited for its slot
                started = time.monotonic()
                try:
                    state.children_deleted |= loops.take_child_deletion(key)
                    due = await one_pass(body, pods(), api, state, logger=logger, reader=reader)
                    failures = 0
                except Exception as exc:
                    if conflict(exc):
                        # Our view was stale: the watch brings the newer job shortly.
                        state.written = None
                        due = 0.5
                    else:
                        failures += 1
                        due = min(2.0**failures, 60.0)
                        logger.warning("reconcile failed (retry in %.0fs): %s", due, exc)
                finally:
                    metrics.RECONCILE.observe(time.monotonic() - started)
            # Every pass, not only on writes: a restarted operator counts jobs whose status did not change.
            if state.phase is not None:
                loops.set_phase(key, state.phase)
            timeout = settings.resync_seconds if due is None else min(due, settings.resync_seconds)
            try:
                await asyncio.wait_for(event.wait(), timeout=timeout)
                await asyncio.sleep(settings.coalesce_seconds)  # let a burst of pod events land first
            except TimeoutError:
                pass
    finally:
        state.pacing.cancel()
        loops.forget(key)
