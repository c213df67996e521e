"""Autotune: measure candidate loader configs with the training step running, in bounded time.

The loader alone is the wrong yardstick: on CPU the step competes with the workers for the same cores,
and a config that loads fastest in isolation can train slower. So each candidate feeds the real training
step (`StepFn`): untimed while its loader fills (`time_steps`), then for a window of at least
`autotune_batches` batches and `WINDOW_SECONDS`; the first batch's wait is reported apart. The model
and optimizer are restored afterwards (`preserving`), so a run with and without autotune trains the
same weights.

With several ranks every step all-reduces, so every rank must run the same candidates for the same
number of steps: rank 0's candidate list, its choices and its window lengths are broadcast, and the time
budget is checked with one agreement per candidate (`Collectives`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from torchjob_core.constants import MAX_AUTO_WORKERS

from torchjob_trainer.data.loader import LoaderSettings, make_loader

log = logging.getLogger(__name__)

StepFn = Callable[[Any], None]  # runs one real training step on a batch
MAX_WORKERS_PER_CPU = 2  # the oversubscription autotune tries at most
WINDOW_SECONDS = 1.0  # each candidate's shortest timed window (time_steps says why)
REFINE_PREFETCH = 4


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclass(frozen=True)
class Measurement:
    settings: LoaderSettings
    samples_per_second: float
    first_batch_seconds: float


def _same(value: Any) -> Any:
    return value


def _any(flag: bool) -> bool:
    return flag


@dataclass(frozen=True)
class Collectives:
    """What keeps ranks in step: `broadcast` returns rank 0's value, `agree` is True if any rank's is."""

    broadcast: Callable[[Any], Any] = _same
    agree: Callable[[bool], bool] = _any


def worker_counts(cpus_per_process: float) -> list[int]:
    """In-process, then 1/2, 1, 1.5 and 2 workers per CPU: oversubscription is a candidate."""
    c = max(1, int(cpus_per_process))
    counts = {0, max(1, c // 2), c, c + c // 2, MAX_WORKERS_PER_CPU * c}
    return sorted(n for n in counts if n <= MAX_WORKERS_PER_CPU * MAX_AUTO_WORKERS)


def candidates(base: LoaderSettings, cpus_per_process: float) -> list[LoaderSettings]:
    """The first round: every worker count at the base prefetch (0 workers has no prefetch)."""
    return [replace(base, num_workers=n) for n in worker_counts(cpus_per_process)]


def refinements(best: LoaderSettings) -> list[LoaderSettings]:
    """The second round: a deeper prefetch for the winning worker count."""
    if best.num_workers == 0 or best.prefetch_factor >= REFINE_PREFETCH:
        return []
    return [replace(best, prefetch_factor=REFINE_PREFETCH)]


def time_steps(
    batches: Iterable[Any],
    step: StepFn,
    *,
    warmup: int,
    count: int,
    batch_size: int,
    min_seconds: float = 0.0,
    same_count: Callable[[int], int] = _same,
) -> tuple[float, float]:
    """(samples/s of fetch + step over at least `count` batches and about `min_seconds` after `warmup`
    untimed ones, seconds to the first batch).

    The warm-up is what a loader holds in flight (`LoaderSettings.batches_in_flight`): its workers'
    start-up, and the batches they prefetched meanwhile, which would flatter a loader slower than the
    step. The window is long in time, not only in batches: a new worker's first second runs slow (its
    first reads of the dataset copy pages it shares with the parent), and on 2 CPUs, JPEG decode,
    windows of 15 batches (0.2 s) read 1600-2300 samples/s for configs that train at 2700 and picked
    each of 1-4 workers in turn; windows of 0.7-1 s read 2400-2980 and picked the 3 or 4 workers that
    lead 600-step runs, six times in six (docs/benchmarks-dataloader.md). Ranks must step alike (every step
    all-reduces), so the batches added to reach `min_seconds` are rank 0's count (`same_count`).
    """
    it = iter(batches)
    start = time.perf_counter()
    _run_steps(it, step, 1)
    first = time.perf_counter() - start
    _run_steps(it, step, max(1, warmup) - 1)
    timed_start = time.perf_counter()
    timed = _run_steps(it, step, count)
    elapsed = time.perf_counter() - timed_start
    if timed == count and 0 < elapsed < min_seconds:
        timed += _run_steps(it, step, same_count(extra_batches(count, elapsed, min_seconds)))
        elapsed = time.perf_counter() - timed_start
    return (timed * batch_size / elapsed if timed > 0 and elapsed > 0 else 0.0), first


def measure_candidate(
    dataset: Dataset[Any],
    sampler: Any,
    settings: LoaderSettings,
    step: StepFn,
    *,
    batches: int,
    batch_size: int,
    same_count: Callable[[int], int] = _same,
) -> Measurement:
    """One candidate as autotune times it (`time_steps`), on a loader of its own whose workers end
    with the measurement."""
    loader = make_loader(dataset, sampler, batch_size, replace(settings, persistent_workers=False))
    rate, first = time_steps(
        loader,
        step,
        warmup=settings.batches_in_flight(),
        count=batches,
        batch_size=batch_size,
        min_seconds=WINDOW_SECONDS,
        same_count=same_count,
    )
    del loader
    return Measurement(settings, rate, first)


def extra_batches(count: int, elapsed: float, min_seconds: float) -> int:
    """Batches to add to `count` done in `elapsed` seconds to fill `min_seconds` at the same pace."""
    return math.ceil(count * (min_seconds - elapsed) / elapsed)


def _run_steps(batches: Iterator[Any], step: StepFn, count: int) -> int:
    """Step on up to `count` batches; returns how many there were."""
    done = 0
    for _ in range(count):
        try:
            batch = next(batches)
        except StopIteration:
            break
        step(batch)
        del batch  # a worker's batch pins shared memory until its last reference goes
        done += 1
    return done


def time_batches(
    batches: Iterable[object], *, warmup: int, count: int, batch_size: int
) -> tuple[float, float]:
    """The loader alone (no step): `time_steps` with a step that does nothing."""
    return time_steps(batches, no_step, warmup=warmup, count=count, batch_size=batch_size)


def no_step(_batch: Any) -> None:
    """The step of a loader-only measurement."""
    return None


@contextlib.contextmanager
def preserving(*objects: Stateful, enabled: bool = True) -> Iterator[None]:
    """Restore the objects' state on exit: autotune's steps measure, they do not train.

    The snapshot goes through CPU memory (torch.save to a buffer), so it costs host RAM of one model
    and optimizer state, not device memory; `enabled=False` (no autotune) costs nothing.
    """
    if not enabled:
        yield
        return
    buf = io.BytesIO()
    torch.save([o.state_dict() for o in objects], buf)
    try:
        yield
    finally:
        buf.seek(0)
        for obj, state in zip(objects, torch.load(buf, map_location="cpu", weights_only=False), strict=True):
            obj.load_state_dict(state)


def _measure_all(
    options: list[LoaderSettings],
    measure: Callable[[LoaderSettings], Measurement],
    deadline: float,
    coll: Collectives,
    *,
    first_free: bool,
) -> tuple[list[Measurement], int]:
    """Measure options in order until the deadline; returns the results and how many were skipped."""
    results: list[Measurement] = []
    for i, option in enumerate(options):
        if (results or not first_free) and coll.agree(time.perf_counter() > deadline):
            return results, len(options) - i
        results.append(measure(option))
    return results, 0


def _fastest(results: list[Measurement], coll: Collectives) -> Measurement:
    """Rank 0's fastest (ties keep the earlier, cheaper option), found in every rank's own results."""
    mine = max(results, key=lambda m: m.samples_per_second)
    chosen: LoaderSettings = coll.broadcast(mine.settings)
    return next((m for m in results if m.settings == chosen), mine)


def autotune(
    options: list[LoaderSettings],
    measure: Callable[[LoaderSettings], Measurement],
    *,
    max_seconds: float = math.inf,
    coll: Collectives | None = None,
    refine: Callable[[LoaderSettings], list[LoaderSettings]] = refinements,
) -> tuple[LoaderSettings, list[Measurement]]:
    """Measure the options, then the refinements of the fastest, within `max_seconds` (checked before
    each candidate; one candidate always runs). Returns rank 0's fastest and this rank's table."""
    coll = coll or Collectives()
    started = time.perf_counter()
    deadline = started + max_seconds
    results, skipped = _measure_all(options, measure, deadline, coll, first_free=True)
    best = _fastest(results, coll)
    if not skipped:
        more, skipped = _measure_all(
            coll.broadcast(refine(best.settings)), measure, deadline, coll, first_free=False
        )
        results += more
        best = _fastest(results, coll)
    took = time.perf_counter() - started
    if skipped:
        log.warning("autotune: the %.0f s budget ran out; %d candidates not measured", max_seconds, skipped)
    log.info(
        "autotune results (%d candidates, %.1f s of a %.0f s budget):\n%s",
        len(results),
        took,
        max_seconds,
        format_table(results, best),
    )
    return best.settings, results


def format_table(results: list[Measurement], best: Measurement) -> str:
    lines = [f"{'':2}{'workers':>8} {'prefetch':>8} {'pin':>5} {'samples/s':>11} {'first batch s':>14}"]
    for m in results:
        s = m.settings
        mark = "* " if m is best else "  "
        lines.append(
            f"{mark}{s.num_workers:>8} {s.prefetch_factor:>8} {s.pin_memory!s:>5} "
            f"{m.samples_per_second:>11.1f} {m.first_batch_seconds:>14.3f}"
        )
    return "\n".join(lines)
