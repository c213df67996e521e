"""`--plot out.png`: throughput and data-wait ratio over time, one line per rank."""

from __future__ import annotations

from pathlib import Path

from torchjob_cli.progress import Tracker


def plot(tracker: Tracker, out: Path, *, title: str) -> bool:
    """Write the PNG; False when no rank reported progress (nothing to draw)."""
    series = tracker.series_for_plot()
    if not any(s.points for s in series.values()):
        return False
    import matplotlib  # noqa: PLC0415  (slow import; only with --plot)

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t0 = min(s.points[0].time for s in series.values() if s.points)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for rank, one in sorted(series.items()):
        tp = [(p.time - t0, p.samples_per_s) for p in one.points if p.samples_per_s is not None]
        dw = [(p.time - t0, p.data_wait_ratio) for p in one.points if p.data_wait_ratio is not None]
        if tp:
            top.plot(*zip(*tp, strict=True), marker="o", markersize=3, label=f"rank {rank}")
        if dw:
            bottom.plot(*zip(*dw, strict=True), marker="o", markersize=3, label=f"rank {rank}")
    top.set_ylabel("samples/s")
    bottom.set_ylabel("data-wait ratio")
    bottom.set_xlabel("seconds since first report")
    bottom.set_ylim(0, 1)
    top.set_title(title)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True
