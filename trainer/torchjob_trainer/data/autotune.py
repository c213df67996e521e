"""Autotune: measure a few loader configurations for a bounded number of batches, keep the fastest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from torchjob_trainer.data.loader import LoaderSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    settings: LoaderSettings
    samples_per_second: float
    first_batch_seconds: float


def candidates(base: LoaderSettings, cpus: float) -> list[LoaderSettings]:
    """In-process, half the auto count, auto and twice it (capped by the CPUs), at prefetch 2 and 4."""
    auto = max(1, base.num_workers)
    counts = sorted({0, max(1, auto // 2), auto, min(2 * auto, max(auto, int(cpus)))})
    out: list[LoaderSettings] = []
    for workers in counts:
        prefetches = (base.prefetch_factor,) if workers == 0 else sorted({2, 4, base.prefetch_factor})
        out.extend(replace(base, num_workers=workers, prefetch_factor=p) for p in prefetches)
    return out


def time_batches(batches: Iterable[object], count: int, batch_size: int) -> tuple[float, float]:
    """(steady-state samples/s over batches 2..count, seconds to the first batch)."""
    start = time.perf_counter()
    it = iter(batches)
    first = steady_start = time.perf_counter()
    seen = 0
    for seen, _ in enumerate(it, start=1):
        if seen == 1:
            first = steady_start = time.perf_counter()
        if seen >= count:
            break
    elapsed = time.perf_counter() - steady_start
    steady = (seen - 1) * batch_size / elapsed if seen > 1 and elapsed > 0 else 0.0
    return steady, first - start


def autotune(
    options: list[LoaderSettings], measure: Callable[[LoaderSettings], Measurement]
) -> tuple[LoaderSettings, list[Measurement]]:
    """Measure each option; return the fastest (ties keep the cheaper, earlier option) and the table."""
    results = [measure(opt) for opt in options]
    best = max(results, key=lambda m: m.samples_per_second)
    log.info("autotune results (%d candidates):\n%s", len(results), format_table(results, best))
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
