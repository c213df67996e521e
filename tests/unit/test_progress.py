"""status.progress: parsing rank 0's exposition, the ETA, the read pacing and cap, and the status shape,
and a job loop that folds its reads into its one status write (a fake API with merge-patch semantics)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import heapq
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from torchjob_core import spec
from torchjob_core.spec.api import STATUS
from torchjob_core.spec.errors import FieldError
from torchjob_operator import actuate, handlers, jobloop, progress, settings
from torchjob_operator.budget import TokenBucket
from torchjob_operator.observe import PodObs, observe_pod
from torchjob_operator.progress import JobPacing, Pacer, Reading

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LABELS = 'job="j",local_rank="0",node_rank="0",rank="0"'


def exposition(step: int, final: int | None = 1000, world: int | None = 4, **extra: float) -> str:
    gauges = {"step": step, "epoch": 1, "samples_per_second": 250.0, "data_wait_ratio": 0.125, **extra}
    if final is not None:
        gauges["final_step"] = final
    if world is not None:
        gauges["world_size"] = world
    lines = ["# HELP torchjob_trainer_samples_total x", "# TYPE torchjob_trainer_samples_total counter"]
    lines.append(f"torchjob_trainer_samples_total{{{LABELS}}} 6720.0")
    for name, value in gauges.items():
        lines += [f"# HELP torchjob_trainer_{name} x", f"# TYPE torchjob_trainer_{name} gauge"]
        lines.append(f"torchjob_trainer_{name}{{{LABELS}}} {float(value)}")
    return "\n".join(lines) + "\n"


def test_parse_reads_the_progress_gauges() -> None:
    assert progress.parse(exposition(420)) == Reading(
        step=420, final_step=1000, epoch=1, samples_per_second=250.0, data_wait_ratio=0.125, world_size=4
    )


def test_parse_before_the_first_step_or_of_garbage_is_none() -> None:
    assert progress.parse(exposition(0)) is None
    assert progress.parse("<html>not metrics</html>\n{") is None
    assert progress.parse("") is None


def test_parse_an_older_trainer_without_final_step_or_world_size() -> None:
    reading = progress.parse(exposition(7, final=None, world=None, samples_per_second=float("nan")))
    assert reading == Reading(7, 0, 1, 0.0, 0.125, 0)


@pytest.mark.parametrize(
    ("step", "final", "previous", "seconds", "expected"),
    [
        (420, 1000, {"step": 400, "readTime": "2026-01-01T00:00:00Z"}, 30, 870),  # 20 steps / 30 s
        (1000, 1000, {}, 30, 0),  # done
        (420, 1000, {}, 30, None),  # first read: no rate yet
        (420, 1000, {"step": 420, "readTime": "2026-01-01T00:00:00Z"}, 30, None),  # stalled
        (100, 1000, {"step": 420, "readTime": "2026-01-01T00:00:00Z"}, 30, None),  # resumed further back
        (420, 0, {"step": 400, "readTime": "2026-01-01T00:00:00Z"}, 30, None),  # total unknown
        (420, 1000, {"step": 400, "readTime": "2026-01-01T00:00:30Z"}, 30, None),  # same second
    ],
)
def test_eta(step: int, final: int, previous: dict[str, Any], seconds: int, expected: int | None) -> None:
    now = T0 + dt.timedelta(seconds=seconds)
    assert progress.eta_seconds(step, final, previous, now) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45, "45s"), (500, "8m20s"), (11100, "3h5m"), (187200, "2d4h")]
)
def test_duration(seconds: int, text: str) -> None:
    assert progress.duration(seconds) == text


def check_status(status: Mapping[str, Any]) -> None:
    errors: list[FieldError] = []
    STATUS.check(dict(status), "status", errors)
    assert errors == []


def test_figures_are_a_valid_status_progress() -> None:
    previous = {"step": 400, "readTime": "2026-01-01T00:00:00Z"}
    now = T0 + dt.timedelta(seconds=30)
    out = progress.figures(progress.parse(exposition(420)) or Reading(0, 0, 0, 0, 0, 0), previous,
                           world_size=2, pod="j-node-0-r0", now=now)  # fmt: skip
    assert out == {
        "step": 420,
        "totalSteps": 1000,
        "steps": "420/1000",
        "epoch": 1,
        "samplesPerSecond": 1000.0,  # 250 per rank x the exported world size 4 (not the spec's 2)
        "dataWaitRatio": 0.125,
        "etaSeconds": 870,
        "eta": "14m30s",
        "readTime": "2026-01-01T00:00:30Z",
        "pod": "j-node-0-r0",
    }
    check_status({"phase": "Running", "progress": out})


def test_figures_without_an_estimate_leave_the_eta_out() -> None:
    reading = Reading(7, 0, 0, 10.0, 0.0, 0)
    out = progress.figures(reading, {}, world_size=3, pod="p", now=T0)
    assert (out["steps"], out["samplesPerSecond"], out["etaSeconds"], out["eta"]) == ("7", 30.0, None, None)


def test_a_job_that_stops_running_keeps_its_figures_but_no_eta() -> None:
    figures = {"steps": "420/1000", "etaSeconds": 870, "eta": "14m30s", "readTime": "2026-01-01T00:00:30Z"}
    status: dict[str, Any] = {"phase": "Restarting", "progress": figures}
    progress.settle(status)
    assert status["progress"] == figures | {"etaSeconds": None, "eta": None}
    running: dict[str, Any] = {"phase": "Running", "progress": figures}
    progress.settle(running)
    assert running["progress"] is figures


def test_pacer_caps_reads_across_jobs_and_hands_out_spread_slots() -> None:
    pacer = Pacer(rate=10.0, burst=10)
    slots = [pacer.reserve(100.0) for _ in range(25)]
    assert slots[:10] == [100.0] * 10  # the burst
    assert slots[10:] == pytest.approx([100.0 + 0.1 * k for k in range(1, 16)])  # then exactly 10/s
    # Over any long window no more than rate x window + burst reads.
    pacer = Pacer(rate=2.0, burst=2)
    slots = [pacer.reserve(t * 0.01) for t in range(1000)]
    assert all(sum(t <= s < t + 5 for s in slots) <= 2 * 5 + 2 for t in range(0, 10))
    assert Pacer(rate=1.0).reserve(5.0) == 5.0


def test_a_job_reads_once_per_interval_and_waits_for_its_slot() -> None:
    pacer = Pacer(rate=1.0, burst=1)
    a, b = JobPacing(), JobPacing()
    assert a.wait(30, pacer, 0.0) == 0  # first read: now
    a.done(0.0)
    assert b.wait(30, pacer, 0.0) == 1.0  # the cap: b's slot is one second later, reserved
    assert b.wait(30, pacer, 0.5) == 0.5  # a pass in between does not take another slot
    assert b.wait(30, pacer, 1.0) == 0
    b.done(1.0)
    assert a.wait(30, pacer, 10.0) == 20.0  # the interval
    assert a.wait(30, pacer, 30.0) == 0


class MergeApi:
    """The calls a Running job's pass makes, with the apiserver's merge-patch of status (null deletes)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job, self.patches, self.rv = job, 0, 10

    async def patch_status(self, key: Any, status: Mapping[str, Any], rv: str | None) -> dict[str, Any]:
        self.patches += 1
        self.job["status"] = merge(self.job.get("status") or {}, status)
        self.rv += 1
        self.job["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.job)

    async def post_event(self, *args: Any) -> None:
        pass

    async def ensure_service(self, *args: Any) -> None:
        pass

    async def create_pod(self, *args: Any) -> bool:
        raise AssertionError("a running job's pods exist")


def merge(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping):  # RFC 7386: nulls go at every depth, also in a new object
            target = out.get(k)
            out[k] = merge(target if isinstance(target, Mapping) else {}, v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def running_job() -> tuple[dict[str, Any], list[PodObs]]:
    body = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "10",
                     "finalizers": ["operator.torchjob.dev/finalizer"]},
        "spec": {"image": "img", "nodes": 2, "metrics": {"port": 9400}},
    }  # fmt: skip
    job = spec.load(body)
    pods = []
    for node in range(2):
        pod = {
            "metadata": {
                "name": f"j-node-{node}-r0",
                "labels": {
                    "torchjob.dev/job-name": "j",
                    "torchjob.dev/node-index": str(node),
                    "torchjob.dev/attempt": "0",
                },
            },
            "status": {"phase": "Running", "podIP": f"10.244.0.{node + 1}"},
        }
        pods.append(observe_pod(pod))
    assert job.name == "j"
    return body, pods


class Endpoint:
    """Rank 0's /metrics as a fetch: the step advances 10 per second of the test's clock."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, int]] = []
        self.at = 0.0

    async def __call__(self, host: str, port: int, timeout: float) -> str:
        self.reads.append((host, port))
        return exposition(int(10 * self.at) or 1, final=1000, world=2)


class Loop:
    """One job's passes at given times of a test clock, in one event loop (reads run beside them)."""

    def __init__(self, fetch: progress.Fetch) -> None:
        body, self.pods = running_job()
        self.api = MergeApi(body)
        self.woken = 0
        self.state = jobloop.JobState(
            inflight=actuate.InFlight(), bucket=TokenBucket(capacity=1000, rate=1000), wake=self.wake
        )
        cfg = settings.ProgressSettings(interval_seconds=30, reads_per_second=10)
        self.reader = progress.Reader(cfg, Pacer(rate=10, burst=10), fetch)
        self.at = 0.0
        self.reader.wall = lambda: T0 + dt.timedelta(seconds=self.at)

    def wake(self) -> None:
        self.woken += 1

    async def run(self, at: float) -> float | None:
        self.at = at
        if isinstance(self.reader.fetch, Endpoint):
            self.reader.fetch.at = at
        due = await jobloop.one_pass(
            copy.deepcopy(self.api.job),
            self.pods,
            self.api,
            self.state,
            now=lambda: T0 + dt.timedelta(seconds=at),
            clock=lambda: at,
            reader=self.reader,
        )
        if self.state.pacing.task is not None:
            await asyncio.wait([self.state.pacing.task])  # the read ends (and wakes the loop)
        return due


def test_a_running_job_reads_rank_0_each_interval_beside_its_passes() -> None:
    endpoint = Endpoint()
    loop = Loop(endpoint)

    async def scenario() -> None:
        # The pass that sees every rank running writes Running at once and starts the first read.
        assert await loop.run(1) is None  # the finished read wakes the loop instead
        assert (loop.api.patches, loop.api.job["status"]["phase"], loop.woken) == (1, "Running", 1)
        assert endpoint.reads == [("10.244.0.1", 9400)]  # node 0's pod IP, the spec's port
        assert await loop.run(1.05) == pytest.approx(29.95)  # woken: its figures, in one status write
        st = loop.api.job["status"]
        assert (loop.api.patches, st["progress"]["step"], st["progress"]["steps"]) == (2, 10, "10/1000")
        assert "eta" not in st["progress"]
        check_status(st)

        for at in (2, 5, 20, 30):  # woken by events before the interval: no read, no write
            assert await loop.run(at) == pytest.approx(31 - at)
        assert (loop.api.patches, len(endpoint.reads)) == (2, 1)

        assert await loop.run(31) is None  # the second read
        assert await loop.run(31.05) == pytest.approx(29.95)
        st = loop.api.job["status"]
        assert (loop.api.patches, st["progress"]["step"], st["progress"]["readTime"]) == (
            3,
            310,
            "2026-01-01T00:00:31Z",
        )
        assert (st["progress"]["etaSeconds"], st["progress"]["eta"]) == (69, "1m9s")  # 690 steps at 10/s
        assert st["progress"]["samplesPerSecond"] == 500.0
        check_status(st)

    asyncio.run(scenario())


def test_a_pod_that_does_not_answer_never_holds_up_a_pass() -> None:
    async def silent(host: str, port: int, timeout: float) -> str:
        await asyncio.sleep(3600)
        raise AssertionError("cancelled before")

    loop = Loop(silent)

    async def scenario() -> None:
        due = await asyncio.wait_for(
            jobloop.one_pass(copy.deepcopy(loop.api.job), loop.pods, loop.api, loop.state, now=lambda: T0,
                             clock=lambda: 0.0, reader=loop.reader),
            timeout=5,
        )  # fmt: skip
        assert due is None and loop.api.job["status"]["phase"] == "Running"
        assert loop.state.pacing.task is not None and not loop.state.pacing.task.done()
        loop.state.pacing.cancel()

    asyncio.run(scenario())


def test_reads_fail_quietly_and_are_retried_after_the_interval() -> None:
    async def refused(host: str, port: int, timeout: float) -> str:
        raise ConnectionRefusedError(host)

    loop = Loop(refused)

    async def scenario() -> None:
        assert await loop.run(0) is None
        assert await loop.run(0.05) == pytest.approx(29.95)
        assert loop.api.patches == 1 and "progress" not in loop.api.job["status"]  # Running only

    asyncio.run(scenario())


def test_a_thousand_jobs_stay_within_the_global_cap() -> None:
    """1,000 running jobs, each woken whenever its schedule says, for 300 s: reads and writes <= the cap."""
    cfg = settings.ProgressSettings(interval_seconds=30, reads_per_second=10)
    pacer = Pacer(rate=cfg.reads_per_second, burst=10)
    jobs = [JobPacing() for _ in range(1000)]
    due = [(0.0, i) for i in range(len(jobs))]  # every job's next pass, soonest first
    reads: list[float] = []
    while due[0][0] <= 300:
        now, i = heapq.heappop(due)
        wait = jobs[i].wait(cfg.interval_seconds, pacer, now)
        if wait == 0:
            jobs[i].done(now)
            reads.append(now)
            wait = cfg.interval_seconds
        heapq.heappush(due, (now + wait, i))
    assert len(reads) <= 10 * 300 + 10
    assert len(reads) >= 10 * 300 - 10  # the cap, not the interval, is the limit here (1,000 / 30 s > 10/s)
    assert all(sum(t <= r < t + 1 for r in reads) <= 10 + 10 for t in range(300))


def test_settings_flags() -> None:
    cfg = settings.from_args(["--progress-interval-seconds", "15", "--progress-reads-per-second", "5"])
    assert cfg.progress == settings.ProgressSettings(interval_seconds=15, reads_per_second=5)
    assert settings.from_args([]).progress == settings.ProgressSettings(30, 10, 2)
    with pytest.raises(SystemExit):
        settings.from_args(["--progress-reads-per-second", "0"])


def test_fetch_metrics_over_a_real_socket() -> None:
    async def scenario() -> tuple[str, str]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            body = b"ok" if request.startswith(b"GET /metrics HTTP/1.0") else b"bad"
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
            writer.close()

        ok = await asyncio.start_server(serve, "127.0.0.1", 0)
        missing = await asyncio.start_server(not_found, "127.0.0.1", 0)
        async with ok, missing:
            text = await progress.fetch_metrics("127.0.0.1", ok.sockets[0].getsockname()[1], 5)
            try:
                await progress.fetch_metrics("127.0.0.1", missing.sockets[0].getsockname()[1], 5)
            except ValueError as exc:
                return text, str(exc)
        return text, ""

    text, error = asyncio.run(scenario())
    assert text == "ok"
    assert "404" in error


def test_startup_gives_the_loops_one_reader_from_the_settings() -> None:
    cfg = settings.Settings(progress=settings.ProgressSettings(interval_seconds=5, reads_per_second=3))
    runtime = handlers.OperatorRuntime(settings=cfg, api=object())  # type: ignore[arg-type]
    handlers.configure(settings=kopf.OperatorSettings(), memo=runtime.memo())
    assert runtime.reader is not None and runtime.reader.settings == cfg.progress
    assert (runtime.reader.pacer.rate, runtime.reader.pacer.burst) == (3, 3)
