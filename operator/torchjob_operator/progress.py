"""Live training progress in `status.progress`, read from rank 0's metrics endpoint at a bounded rate.

While a job is Running, its loop reads node 0's first metrics port (pod IP : `spec.metrics.port`, where
rank 0 of a fixed-size job runs) at most once per `interval_seconds`, and all jobs together read at most
`reads_per_second`: a shared `Pacer` hands out read slots, so jobs deferred by the cap are spread over
time instead of waking together. A read runs beside the loop (a pod that does not answer never delays a
pass or its status write); when it ends it wakes the loop, whose next pass puts the figures into its
own status write. So a read costs at most one status patch, and the patches are bounded by the same cap.

The ETA is the remaining steps at the step rate between the previous read (the `step` and `readTime`
already in status) and this one: wall time, so checkpoints and evaluation count, and a restarted
operator keeps estimating from what status holds.

Pure except `fetch_metrics` (one HTTP GET over asyncio streams: no thread is held by a pod that does
not answer) and `Reader.update`, which starts the fetch it was given as a task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from torchjob_core import constants
from torchjob_core import status as st
from torchjob_core.spec import TrainingJob

from torchjob_operator import metrics
from torchjob_operator.observe import PodObs
from torchjob_operator.settings import ProgressSettings

log = logging.getLogger(__name__)

PREFIX = constants.TRAINER_METRIC_PREFIX
#: A rank's exposition is a few KiB; anything much larger is not our trainer.
MAX_BODY_BYTES = 1 << 20
#: status.progress keys that only mean something while the job runs.
ETA_KEYS = ("etaSeconds", "eta")

Fetch = Callable[[str, int, float], Awaitable[str]]  # (host, port, timeout seconds) -> exposition text


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one rank's endpoint says about progress."""

    step: int
    final_step: int  # 0: not exported (an older trainer)
    epoch: int
    samples_per_second: float  # this rank's, over its last window
    data_wait_ratio: float
    world_size: int  # 0: not exported


def parse(text: str) -> Reading | None:
    """A Reading from a text exposition; None before the first step or for a body that is not one."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(PREFIX):
                    values.setdefault(sample.name.removeprefix(PREFIX), sample.value)
    except ValueError:
        return None
    if not values.get("step"):
        return None  # not training yet: the gauges still hold their zero defaults

    def count(key: str) -> int:
        value = values.get(key, 0.0)
        return int(value) if math.isfinite(value) and value > 0 else 0

    def ratio(key: str) -> float:
        value = values.get(key, 0.0)
        return value if math.isfinite(value) and value > 0 else 0.0

    return Reading(
        step=count("step"),
        final_step=count("final_step"),
        epoch=count("epoch"),
        samples_per_second=ratio("samples_per_second"),
        data_wait_ratio=min(ratio("data_wait_ratio"), 1.0),
        world_size=count("world_size"),
    )


def eta_seconds(step: int, final_step: int, previous: Mapping[str, Any], now: dt.datetime) -> int | None:
    """Seconds until `final_step` at the rate since the previous read; None when that rate is unknown."""
    if final_step <= 0:
        return None
    if step >= final_step:
        return 0
    before, since = previous.get("step"), st.parse_time(previous.get("readTime"))
    if not isinstance(before, int) or since is None or step <= before:
        return None  # the first read, a stalled step or a restart that resumed further back
    elapsed = (now - since).total_seconds()
    if elapsed <= 0:
        return None
    return math.ceil((final_step - step) * elapsed / (step - before))


def duration(seconds: int) -> str:
    """Like kubectl's ages, one unit finer: 45s, 8m20s, 3h5m, 2d4h."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def figures(
    reading: Reading, previous: Mapping[str, Any], *, world_size: int, pod: str, now: dt.datetime
) -> dict[str, Any]:
    """status.progress for one reading. `world_size` is the spec's, for trainers that do not export it."""
    total = reading.final_step
    eta = eta_seconds(reading.step, total, previous, now)
    return {
        "step": reading.step,
        "totalSteps": total,
        "steps": f"{reading.step}/{total}" if total else str(reading.step),
        "epoch": reading.epoch,
        # The trainer's own rule for job throughput (its progress line): one rank's rate x world size.
        "samplesPerSecond": round(reading.samples_per_second * (reading.world_size or world_size), 1),
        "dataWaitRatio": round(reading.data_wait_ratio, 3),
        # None removes the key in the status merge-patch: no estimate is better than a stale one.
        "etaSeconds": eta,
        "eta": None if eta is None else duration(eta),
        "readTime": st.timestamp(now),
        "pod": pod,
    }


def settle(status: dict[str, Any]) -> None:
    """A job that is not Running keeps its last figures but no ETA (in place)."""
    progress = status.get("progress")
    running = status.get("phase") == "Running"
    if not running and isinstance(progress, dict) and any(progress.get(k) is not None for k in ETA_KEYS):
        status["progress"] = progress | dict.fromkeys(ETA_KEYS)


@dataclasses.dataclass
class Pacer:
    """Read slots shared by every job: at most `rate` per second, `burst` at once (a GCRA)."""

    rate: float
    burst: int = 1
    next_free: float = -math.inf  # when the bucket would be empty again at exactly `rate`

    def reserve(self, now: float) -> float:
        """The time of the earliest free slot (now or later), which is taken."""
        slot = max(now, self.next_free - (self.burst - 1) / self.rate)
        self.next_free = max(self.next_free, now) + 1 / self.rate
        return slot


@dataclasses.dataclass(frozen=True)
class Fetched:
    """What one read brought back: the exposition (None when the read failed), from which pod, when."""

    text: str | None
    pod: str
    time: dt.datetime


@dataclasses.dataclass
class JobPacing:
    """One job's reads: its schedule (monotonic seconds: the last read, a reserved slot not used yet)
    and the read in flight."""

    last: float | None = None
    slot: float | None = None
    task: asyncio.Task[Fetched] | None = None

    def take(self) -> Fetched | None:
        """The finished read, once (None while none has finished)."""
        if self.task is None or not self.task.done():
            return None
        task, self.task = self.task, None
        return None if task.cancelled() else task.result()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def wait(self, interval: float, pacer: Pacer, now: float) -> float:
        """Seconds until this job may read (0: now). Reserves a slot once `interval` has passed."""
        if self.slot is None:
            if self.last is not None and now < self.last + interval:
                return self.last + interval - now
            self.slot = pacer.reserve(now)
        return max(0.0, self.slot - now)

    def done(self, now: float) -> None:
        self.last, self.slot = now, None


def target(job: TrainingJob, pods: Sequence[PodObs], status: Mapping[str, Any]) -> PodObs | None:
    """The pod to read: node 0 of the current attempt, Running with an IP, in a Running job."""
    if status.get("phase") != "Running" or job.spec.metrics.port == 0:
        return None
    attempt = int(status.get("attempt") or 0)
    node0 = [p for p in pods if p.index == 0 and p.attempt == attempt and p.phase == "Running"]
    live = [p for p in node0 if p.ip and not p.deleting]
    return max(live, key=lambda p: p.replacement, default=None)


async def fetch_metrics(host: str, port: int, timeout: float) -> str:
    """GET /metrics over HTTP/1.0 (the server closes the connection after the body); errors raise."""

    async def get() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(f"GET /metrics HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n".encode())
            await writer.drain()
            data = bytearray()
            while chunk := await reader.read(65536):
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    raise ValueError(f"/metrics on {authority} is larger than {MAX_BODY_BYTES} bytes")
            return bytes(data)
        finally:
            writer.close()

    data = await asyncio.wait_for(get(), timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or status_line[1] != b"200":
        raise ValueError(f"/metrics answered {head[:80]!r}")
    return body.decode("utf-8", "replace")


@dataclasses.dataclass
class Reader:
    """Reads progress for every job's loop: the settings, the shared pacer and the fetch."""

    settings: ProgressSettings
    pacer: Pacer
    fetch: Fetch = fetch_metrics
    wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)  # a read's readTime

    @classmethod
    def from_settings(cls, settings: ProgressSettings) -> Reader:
        rate = settings.reads_per_second
        return cls(settings, Pacer(rate=rate, burst=max(1, int(rate))))

    def update(
        self,
        job: TrainingJob,
        pods: Sequence[PodObs],
        status: dict[str, Any],
        pacing: JobPacing,
        *,
        clock: float,
        wake: Callable[[], None],
    ) -> float | None:
        """Fold a finished read into `status` (the pass's new status, in place) and start a due one as a task
        of the running event loop, which calls `wake` when it ends; seconds until the next read is due
        (None: none, or one is running)."""
        settle(status)
        pod = target(job, pods, status) if self.settings.interval_seconds > 0 else None
        fetched = pacing.take()
        if fetched is not None and pod is not None and fetched.pod == pod.name:
            self._fold(job, fetched, status)
        if pod is None or pacing.task is not None:
            return None
        wait = pacing.wait(self.settings.interval_seconds, self.pacer, clock)
        if wait > 0:
            return wait
        pacing.done(clock)
        pacing.task = asyncio.create_task(self._read(pod, job.spec.metrics.port))
        pacing.task.add_done_callback(lambda _: wake())
        return None

    async def _read(self, pod: PodObs, port: int) -> Fetched:
        try:
            text: str | None = await self.fetch(pod.ip, port, self.settings.timeout_seconds)
        except (OSError, TimeoutError, ValueError) as exc:
            metrics.PROGRESS_READS.labels(result="error").inc()
            log.debug("progress from %s (%s:%d): %s", pod.name, pod.ip, port, exc)
            text = None
        return Fetched(text, pod.name, self.wall())

    @staticmethod
    def _fold(job: TrainingJob, fetched: Fetched, status: dict[str, Any]) -> None:
        reading = None if fetched.text is None else parse(fetched.text)
        if fetched.text is not None:
            metrics.PROGRESS_READS.labels(result="ok" if reading else "empty").inc()
        if reading is not None:
            previous = status.get("progress") or {}
            world = job.spec.nodes * job.nproc_per_node
            status["progress"] = figures(
                reading, previous, world_size=world, pod=fetched.pod, now=fetched.time
            )
