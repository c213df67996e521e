"""Kopf registration: thin wiring from watch events to `jobloop`.

- an index of pods by (namespace, job), built from pod watch events (Kopf fills indexes before any
  handler runs, so a restarted operator sees every existing pod before it decides anything);
- pod and job events poke the job's loop; a deleted Service or PodGroup of a job pokes it to re-create it;
- one daemon per TrainingJob runs the loop.

What the handlers share (settings, the API client, its request ledger, the job loops) is one
`OperatorRuntime`, which `main` creates and hands to Kopf as the operator's memo; Kopf gives every
handler that memo (per-object memos are shallow copies, so they hold the same runtime).

Jobs whose `spec.managedBy` names another controller (Kueue's MultiKueue, say) match no handler: no
finalizer, no pods, no status from this operator. The field is immutable, so a job never changes sides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import kopf
from torchjob_core import constants

from torchjob_operator import jobloop, k8s, progress
from torchjob_operator.observe import PodObs, observe_pod
from torchjob_operator.settings import Settings

POD_LABELS = {constants.LABEL_JOB_NAME: kopf.PRESENT}


MEMO_KEY = "runtime"


@dataclasses.dataclass
class OperatorRuntime:
    """The operator's state for its whole run, in Kopf's memo under MEMO_KEY."""

    settings: Settings = dataclasses.field(default_factory=Settings)
    ledger: k8s.RequestLedger = dataclasses.field(default_factory=k8s.RequestLedger)
    loops: jobloop.Loops = dataclasses.field(init=False)
    api: k8s.KubeApi | None = None
    #: Progress reads for every job, sharing one cap (set at startup from settings).
    reader: progress.Reader | None = None

    def __post_init__(self) -> None:
        self.loops = jobloop.Loops(max_passes=self.settings.max_concurrent_passes)

    def memo(self) -> kopf.Memo:
        return kopf.Memo({MEMO_KEY: self})


def runtime_of(memo: kopf.Memo) -> OperatorRuntime:
    runtime = memo.get(MEMO_KEY)
    if not isinstance(runtime, OperatorRuntime):
        raise TypeError("the operator's memo holds no OperatorRuntime (main creates it)")
    return runtime


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff base without the diffing: Kopf builds an object's "essence" (two deep copies of the
    body) on every watch event, but only on.create/update/resume handlers read it, and this operator
    has none. Profiled at 100 jobs x 4 nodes, that copying was a sixth of the event loop's busy time.
    Nothing is stored, so there is nothing to fetch."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Our own prefix for Kopf's finalizer and annotations; quiet event posting; bounded watches."""
    # Started without main (`kopf run -m torchjob_operator.handlers`): default settings. Startup
    # handlers finish before Kopf sees any object, so every per-object memo copies this one.
    memo.setdefault(MEMO_KEY, OperatorRuntime())
    runtime = runtime_of(memo)
    settings.persistence.finalizer = constants.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.OPERATOR_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase(
        prefix=constants.OPERATOR_PREFIX, key="last-handled-configuration"
    )
    # Our Events come from jobloop; Kopf posts only its own warnings and errors.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = runtime.settings.watch_server_timeout
    settings.watching.client_timeout = runtime.settings.watch_server_timeout + 30
    # Kopf retries its own requests (watches, patches) on 429, 5xx and lost connections: with our backoffs
    # its watches outlast an apiserver restart instead of giving up after Kopf's default ~54 s.
    settings.networking.error_backoffs = k8s.kopf_backoffs()
    # Resources are discovered once at startup: no need to watch CRDs (and no RBAC for them).
    settings.scanning.disabled = True
    if runtime.api is None:
        rate = k8s.RateLimiter(runtime.settings.client_rate)
        runtime.api = k8s.KubeApi(k8s.load_client(), runtime.ledger, rate=rate)
    if runtime.reader is None:
        runtime.reader = progress.Reader.from_settings(runtime.settings.progress)


# The handlers are coroutines although they do not await: Kopf runs a plain function in its thread
# pool, a hop per pod event (and the index's, per pod event again) that profiled as most of the loop's
# executor traffic.
@kopf.index("pods", labels=POD_LABELS)
async def pods_by_job(body: kopf.Body, namespace: str | None, **_: Any) -> dict[tuple[str, str], PodObs]:
    """Every pod of every TrainingJob, reduced to what decide() reads."""
    obs = observe_pod(body)
    return {(str(namespace), obs.job): obs}


@kopf.on.event("pods", labels=POD_LABELS)
async def pod_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    runtime_of(memo).loops.wake((str(namespace), str(labels.get(constants.LABEL_JOB_NAME))))


# A child deleted by hand (or by anything but the job's own deletion) comes back in the next pass.
@kopf.on.event("services", labels=POD_LABELS)
@kopf.on.event(constants.COSCHEDULING_PODGROUP_API_VERSION, "podgroups", labels=POD_LABELS)
@kopf.on.event(constants.VOLCANO_PODGROUP_API_VERSION, "podgroups", labels=POD_LABELS)
@kopf.on.event(constants.KUBERNETES_PODGROUP_API_VERSION, "podgroups", labels=POD_LABELS)
async def child_changed(
    type: str, labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    if type == "DELETED":
        runtime_of(memo).loops.child_deleted((str(namespace), str(labels.get(constants.LABEL_JOB_NAME))))


def managed_here(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("managedBy", constants.CONTROLLER_NAME) == constants.CONTROLLER_NAME)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURAL, when=managed_here)
async def job_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    runtime_of(memo).loops.wake((str(namespace), name))


# A grace period to exit on the stop flag before Kopf resorts to cancelling the task.
@kopf.daemon(
    constants.GROUP,
    constants.VERSION,
    constants.PLURAL,
    when=managed_here,
    cancellation_backoff=1.0,
    cancellation_timeout=10.0,
)
async def run_job(
    *,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """One serialized reconcile loop per TrainingJob, until it is deleted."""
    runtime = runtime_of(memo)
    assert runtime.api is not None, "startup handler sets the API client"
    key = (str(namespace), name)

    index: kopf.Index[tuple[str, str], PodObs] = kwargs["pods_by_job"]  # live: Kopf keeps it current

    def pods() -> list[PodObs]:
        return list(index.get(key, []))

    async def wake_on_stop() -> None:
        # Ends the loop's wait at once, so Kopf never has to cancel (and warn about) the daemon.
        await stopped.wait()
        runtime.loops.wake(key)

    watcher = asyncio.create_task(wake_on_stop())
    try:
        await jobloop.run(
            key,
            body,
            pods,
            runtime.api,
            runtime.settings,
            loops=runtime.loops,
            logger=logger,
            conflict=k8s.is_conflict,
            stopped=stopped.is_set,
            reader=runtime.reader,
        )
    finally:
        watcher.cancel()
        runtime.ledger.forget(key)
