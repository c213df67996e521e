"""The end-of-run per-rank table: samples/s, step time, data-wait ratio, final loss.

Numbers come from the trainer's summary files when it wrote them (exact, whole-run), else from the
progress lines seen on the console.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from torchjob_cli.progress import RankSeries, Tracker


@dataclasses.dataclass(frozen=True)
class RankSummary:
    rank: int
    steps: int | None = None
    samples_per_s: float | None = None
    step_time_s: float | None = None
    data_wait_ratio: float | None = None
    final_loss: float | None = None


def from_tracker(tracker: Tracker) -> dict[int, RankSummary]:
    """Per rank: progress lines first (rank 0), then the scraped endpoint readings."""
    out: dict[int, RankSummary] = {}
    for rank in sorted(set(tracker.ranks) | set(tracker.scraped)):
        points = [
            *tracker.scraped.get(rank, RankSeries(rank)).points,
            *tracker.ranks.get(rank, RankSeries(rank)).points,
        ]
        series = RankSeries(rank, sorted(points, key=lambda p: p.time))
        last = series.last
        out[rank] = RankSummary(
            rank=rank,
            steps=max(p.step for p in points) if points else None,
            samples_per_s=series.mean("samples_per_s"),
            step_time_s=series.mean("step_time_s"),
            data_wait_ratio=series.mean("data_wait_ratio"),
            final_loss=next((p.loss for p in reversed(series.points) if p.loss is not None), None)
            if last
            else None,
        )
    return out


def _f(obj: Mapping[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


def _rank_records(doc: Any) -> Iterable[Mapping[str, Any]]:
    """A summary file holds one rank's object, a list of them, or {"ranks": [...]}."""
    if isinstance(doc, list):
        yield from (d for d in doc if isinstance(d, dict))
    elif isinstance(doc, dict):
        ranks = doc.get("ranks")
        if isinstance(ranks, list):
            yield from (d for d in ranks if isinstance(d, dict))
        elif isinstance(ranks, dict):
            for k, v in ranks.items():
                if isinstance(v, dict):
                    yield {"rank": int(k), **v}
        else:
            yield doc


def from_summary_files(paths: Iterable[Path]) -> dict[int, RankSummary]:
    out: dict[int, RankSummary] = {}
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for rec in _rank_records(doc):
            rank = rec.get("rank")
            if not isinstance(rank, int):
                continue
            steps = _f(rec, "steps", "step")
            train_seconds = _f(rec, "train_seconds")
            step_time = _f(rec, "step_time_s", "step_seconds")
            if step_time is None and train_seconds is not None and steps:
                step_time = train_seconds / steps
            out[rank] = RankSummary(
                rank=rank,
                steps=int(steps) if steps is not None else None,
                samples_per_s=_f(rec, "samples_per_s", "samples_per_second", "throughput"),
                step_time_s=step_time,
                data_wait_ratio=_f(rec, "data_wait_ratio", "data_wait_frac"),
                final_loss=_f(rec, "final_loss", "loss"),
            )
    return out


def merge(files: Mapping[int, RankSummary], seen: Mapping[int, RankSummary]) -> list[RankSummary]:
    """Summary-file values win field by field; console values fill the gaps."""
    rows = []
    for rank in sorted(set(files) | set(seen)):
        a, b = files.get(rank), seen.get(rank)
        if a is None or b is None:
            rows.append(a or b)
            continue
        rows.append(
            RankSummary(
                rank,
                **{
                    f.name: getattr(a, f.name) if getattr(a, f.name) is not None else getattr(b, f.name)
                    for f in dataclasses.fields(RankSummary)
                    if f.name != "rank"
                },
            )
        )
    return [r for r in rows if r is not None]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: Iterable[RankSummary], title: str) -> Table:
    t = Table(title=title)
    for col in ("rank", "steps", "samples/s", "step time", "data wait", "final loss"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r.rank),
            "-" if r.steps is None else str(r.steps),
            _fmt(r.samples_per_s, ",.1f"),
            "-" if r.step_time_s is None else f"{r.step_time_s * 1000:.1f} ms",
            "-" if r.data_wait_ratio is None else f"{r.data_wait_ratio:.1%}",
            _fmt(r.final_loss, ".4g"),
        )
    return t
