"""The end-of-run summary: every rank's throughput and data wait, gathered to rank 0 with one collective."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from torchjob_trainer.logs import SUMMARY_TOKEN

log = logging.getLogger(__name__)


@dataclass
class RankTotals:
    samples: float = 0.0
    train_seconds: float = 0.0  # sum of step wall times, data wait included
    data_wait_seconds: float = 0.0
    steps: float = 0.0
    loss: float = math.nan  # of the last step

    def as_list(self) -> list[float]:
        return [self.samples, self.train_seconds, self.data_wait_seconds, self.steps, self.loss]


def _finite(value: float, digits: int) -> float | None:
    """JSON has no NaN: a rank that took no step reports null."""
    return round(value, digits) if math.isfinite(value) else None


def gather(totals: RankTotals, device: torch.device) -> list[RankTotals]:
    """All ranks' totals, in rank order (one all_gather; a plain list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [totals]
    mine = torch.tensor(totals.as_list(), dtype=torch.float64, device=device)
    out = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [RankTotals(*t.cpu().tolist()) for t in out]


def build(per_rank: list[RankTotals], **fields: Any) -> dict[str, Any]:
    ranks: list[dict[str, Any]] = []
    for rank, t in enumerate(per_rank):
        ranks.append(
            {
                "rank": rank,
                "samples": int(t.samples),
                "steps": int(t.steps),
                "train_seconds": round(t.train_seconds, 4),
                "data_wait_seconds": round(t.data_wait_seconds, 4),
                "samples_per_second": round(t.samples / t.train_seconds, 2) if t.train_seconds > 0 else 0.0,
                "data_wait_ratio": round(t.data_wait_seconds / t.train_seconds, 4)
                if t.train_seconds > 0
                else 0.0,
                "loss": _finite(t.loss, 6),
            }
        )
    total_wait = sum(t.data_wait_seconds for t in per_rank)
    total_train = sum(t.train_seconds for t in per_rank)
    return {
        **fields,
        "loss": _finite(per_rank[0].loss, 6) if per_rank else None,
        "world_size": len(per_rank),
        "samples": sum(r["samples"] for r in ranks),
        "samples_per_second": round(sum(float(r["samples_per_second"]) for r in ranks), 2),
        "data_wait_ratio": round(total_wait / total_train, 4) if total_train > 0 else 0.0,
        "ranks": ranks,
    }


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'rank':>4} {'samples':>9} {'steps':>6} {'samples/s':>10} {'data wait':>9}"]
    for r in summary["ranks"]:
        lines.append(
            f"{r['rank']:>4} {r['samples']:>9} {r['steps']:>6} {r['samples_per_second']:>10.1f} "
            f"{r['data_wait_ratio']:>9.1%}"
        )
    lines.append(
        f"{'all':>4} {summary['samples']:>9} {'':>6} {summary['samples_per_second']:>10.1f} "
        f"{summary['data_wait_ratio']:>9.1%}"
    )
    return "\n".join(lines)


def report(summary: dict[str, Any], path: str | None) -> None:
    log.info("run summary (%s):\n%s", summary.get("outcome"), format_table(summary))
    log.info("%s %s", SUMMARY_TOKEN, json.dumps(summary, sort_keys=True))
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        tmp.replace(target)
