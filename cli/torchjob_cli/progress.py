"""Parse rank-prefixed output lines and the trainer's progress lines; keep per-rank time series.

Pure: callers pass the receive time, so tests feed lines without a clock.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

# torchrun renders PET_LOG_LINE_PREFIX_TEMPLATE on every tee'd worker line; the CLI sets it to this.
RANK_PREFIX_TEMPLATE = "[node {node} rank ${{rank}}] "
RANK_LINE = re.compile(r"^\[node (?P<node>\d+) rank (?P<rank>\d+)\] ?(?P<text>.*)$")

# The trainer's machine-readable progress line: a marker, then one JSON object.
PROGRESS_MARKER = "torchjob-progress"

# Accepted spellings per field, first match wins (the trainer's names first).
_ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step", "global_step"),
    "total_steps": ("total_steps", "steps_total", "max_steps"),
    "epoch": ("epoch",),
    "total_epochs": ("total_epochs", "epochs", "epochs_total"),
    "samples_per_s": ("samples_per_s", "samples_per_second", "throughput"),
    "step_time_s": ("step_time_s", "step_seconds", "step_time"),
    "data_wait_ratio": ("data_wait_ratio", "data_wait_frac", "data_wait"),
    "loss": ("loss",),
}


@dataclasses.dataclass(frozen=True)
class RankLine:
    node: int
    rank: int | None  # None: the node's torchrun agent (or launcher) itself
    text: str


@dataclasses.dataclass(frozen=True)
class Progress:
    rank: int
    time: float
    step: int
    total_steps: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    samples_per_s: float | None = None
    step_time_s: float | None = None
    data_wait_ratio: float | None = None
    loss: float | None = None


def split_rank_line(node: int, line: str) -> RankLine:
    """Attribute one output line of node `node`'s agent to a rank (or to the agent)."""
    m = RANK_LINE.match(line)
    if m:
        return RankLine(node=int(m["node"]), rank=int(m["rank"]), text=m["text"])
    return RankLine(node=node, rank=None, text=line)


def _pick(obj: dict[str, Any], field: str) -> Any:
    for key in _ALIASES[field]:
        if key in obj and obj[key] is not None:
            return obj[key]
    return None


def _num(value: Any, kind: type[int] | type[float]) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def parse_progress(rank: int, text: str, *, now: float) -> Progress | None:
    """A Progress if `text` is a trainer progress line, else None."""
    idx = text.find(PROGRESS_MARKER)
    if idx < 0:
        return None
    brace = text.find("{", idx)
    if brace < 0:
        return None
    try:
        obj = json.loads(text[brace:])
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    step = _num(_pick(obj, "step"), int)
    if step is None:
        return None
    return Progress(
        rank=_num(obj.get("rank"), int) if obj.get("rank") is not None else rank,
        time=now,
        step=step,
        total_steps=_num(_pick(obj, "total_steps"), int),
        epoch=_num(_pick(obj, "epoch"), int),
        total_epochs=_num(_pick(obj, "total_epochs"), int),
        samples_per_s=_num(_pick(obj, "samples_per_s"), float),
        step_time_s=_num(_pick(obj, "step_time_s"), float),
        data_wait_ratio=_num(_pick(obj, "data_wait_ratio"), float),
        loss=_num(_pick(obj, "loss"), float),
    )


@dataclasses.dataclass
class RankSeries:
    """Every progress report of one rank, in arrival order."""

    rank: int
    points: list[Progress] = dataclasses.field(default_factory=list)

    @property
    def last(self) -> Progress | None:
        return self.points[-1] if self.points else None

    def mean(self, field: str) -> float | None:
        values = [getattr(p, field) for p in self.points if getattr(p, field) is not None]
        return sum(values) / len(values) if values else None


@dataclasses.dataclass
class Tracker:
    """Per-rank progress of one run (all attempts: a restart keeps the series, steps may go back).

    `ranks` holds the trainer's progress lines (rank 0 writes them); `scraped` holds every rank's
    metrics endpoint readings.
    """

    ranks: dict[int, RankSeries] = dataclasses.field(default_factory=dict)
    scraped: dict[int, RankSeries] = dataclasses.field(default_factory=dict)

    def add(self, p: Progress) -> None:
        self.ranks.setdefault(p.rank, RankSeries(p.rank)).points.append(p)

    def add_scraped(self, p: Progress) -> None:
        self.scraped.setdefault(p.rank, RankSeries(p.rank)).points.append(p)

    def series_for_plot(self) -> dict[int, RankSeries]:
        """Every rank's endpoint readings; the progress lines when nothing was scraped."""
        return self.scraped if any(s.points for s in self.scraped.values()) else self.ranks

    def leader(self) -> Progress | None:
        """The latest report of the lowest rank: what the progress bar shows."""
        if not self.ranks:
            return None
        return self.ranks[min(self.ranks)].last

    def total_samples_per_s(self) -> float | None:
        """The job's throughput: the sum of the ranks' latest scraped readings, else rank 0's line."""
        scraped = [s.last.samples_per_s for s in self.scraped.values() if s.last and s.last.samples_per_s]
        if scraped:
            return sum(scraped)
        lead = self.leader()
        return lead.samples_per_s if lead else None
