"""The local run's console: rank-prefixed log lines above a live progress bar.

Worker lines already carry `[node N rank R]` (torchrun renders the prefix); agent lines get `[node N]`.
Progress lines from the trainer feed the bar and the tracker instead of cluttering the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from torchjob_cli.progress import Tracker, parse_progress, split_rank_line


class RunConsole:
    """Sink for a run's output lines and events; owns the progress bar."""

    def __init__(
        self,
        console: Console,
        tracker: Tracker,
        *,
        show_progress_lines: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.tracker = tracker
        self.show_progress_lines = show_progress_lines
        self.clock = clock
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self._task: TaskID = self._progress.add_task("steps", total=None, detail="waiting for rank 0")

    def __enter__(self) -> RunConsole:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def line(self, node: int, text: str) -> None:
        rl = split_rank_line(node, text)
        if rl.rank is not None:
            p = parse_progress(rl.rank, rl.text, now=self.clock())
            if p is not None:
                self.tracker.add(p)
                self._update_bar()
                if not self.show_progress_lines:
                    return
            self._print(f"[node {rl.node} rank {rl.rank}] {rl.text}")
        else:
            self._print(f"[node {rl.node}] {rl.text}")

    def event(self, text: str) -> None:
        self.console.print(
            f"torchjob: {text}", style="bold yellow", markup=False, highlight=False, soft_wrap=True
        )

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _update_bar(self) -> None:
        lead = self.tracker.leader()
        if lead is None:
            return
        parts = []
        if lead.epoch is not None:
            total = f"/{lead.total_epochs}" if lead.total_epochs else ""
            parts.append(f"epoch {lead.epoch}{total}")
        rate = self.tracker.total_samples_per_s()
        if rate is not None:
            parts.append(f"{rate:,.0f} samples/s")
        if lead.loss is not None:
            parts.append(f"loss {lead.loss:.4g}")
        self._progress.update(
            self._task, completed=lead.step, total=lead.total_steps, detail="  ".join(parts)
        )
