"""Autotune: measure candidate loader configs with the training step running, in bounded time.

The loader alone is the wrong yardstick: on CPU the step competes with the workers for the same cores,
and a config that loads fastest in isolation can train slower. So each candidate feeds the real training
step (`StepFn`) for `batches` batches; the first batch (worker start-up) is timed apart and left out of
the steady rate. The model and optimizer are restored afterwards (`preserving`), so a run with and
without autotune trains the same weights.

With several ranks every step all-reduces, so every rank must run the same candidates for the same
number of steps: rank 0's candidate list and its choices are broadcast, and the time budget is checked
with one agreement per candidate (`Collectives`).
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
from torchjob_core.constants import MAX_AUTO_WORKERS

from torchjob_trainer.data.loader import LoaderSettings

log = logging.getLogger(__name__)

StepFn = Callable[[Any], None]  # runs one real training step on a batch
MAX_WORKERS_PER_CPU = 2  # the oversubscription autotune tries at most
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


def time_steps(batches: Iterable[Any], step: StepFn, count: int, batch_size: int) -> tuple[float, float]:
    """(steady samples/s of fetch + step over batches 2..count, seconds to the first batch)."""
    start = time.perf_counter()
    first = 0.0
    steady_start = start
    seen = 0
    for seen, batch in enumerate(batches, start=1):
        if seen == 1:
            first = time.perf_counter() - start
        step(batch)
        del batch  # a worker's batch pins shared memory until its last reference goes
        if seen == 1:
            steady_start = time.perf_counter()
        if seen >= count:
            break
    elapsed = time.perf_counter() - steady_start
    steady = (seen - 1) * batch_size / elapsed if seen > 1 and elapsed > 0 else 0.0
    return steady, first


def time_batches(batches: Iterable[object], count: int, batch_size: int) -> tuple[float, float]:
    """The loader alone (no step): (steady samples/s over batches 2..count, seconds to the first)."""
    return time_steps(batches, no_step, count, batch_size)


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
