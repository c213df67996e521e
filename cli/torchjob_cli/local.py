"""`torchjob run FILE.yaml`: a TrainingJob as local processes, one torchrun agent per node."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from rich.console import Console
from torchjob_core import checkpoint_files
from torchjob_core.render import storage
from torchjob_core.spec import TrainingJob
from torchjob_core.success_policy import SuccessPolicy

from torchjob_cli import localplan, manifests, summary
from torchjob_cli.localrun import NodePlan, Outcome, RunResult, run_gang
from torchjob_cli.metrics import Scraper
from torchjob_cli.progress import Tracker
from torchjob_cli.ui import RunConsole


@dataclasses.dataclass(frozen=True)
class RunOptions:
    file: Path
    workdir: Path | None = None
    plot: Path | None = None
    grace: float = 10.0
    scrape_interval: float = 0.5
    show_progress_lines: bool = False
    fresh: bool = False  # delete the run dir's checkpoints first instead of resuming from them


def run(opts: RunOptions, console: Console) -> int:
    job = manifests.load_job_file(opts.file)  # SpecError / ManifestError: the caller exits 2
    run_dir = localplan.run_dir_for(job, opts.workdir).resolve()
    localplan.fresh_run_dir(run_dir, keep_checkpoints=not opts.fresh)
    ports = localplan.choose_ports(job)
    urls = localplan.metrics_urls(job, ports)
    _print_plan(console, job, run_dir, urls)

    tracker = Tracker()
    environ = dict(os.environ)

    def plans(attempt: int) -> list[NodePlan]:
        # Fresh rendezvous ports each attempt: the last gang's store may still hold the old ones.
        p = ports if attempt == 0 else dataclasses.replace(ports, master=localplan.free_port())
        return localplan.node_plans(job, p, run_dir, attempt=attempt, environ=environ)

    with (
        RunConsole(console, tracker, show_progress_lines=opts.show_progress_lines) as out,
        Scraper(urls, tracker.add_scraped, interval=opts.scrape_interval) as scraper,
    ):
        result = run_gang(
            plans,
            localplan.policy(job),
            on_line=out.line,
            on_event=out.event,
            grace=opts.grace,
            success=SuccessPolicy.of(job),
        )
    _report(
        console, job, run_dir, result, tracker=tracker, scrapes_ok=scraper.scrapes_ok, plot_path=opts.plot
    )
    return result.exit_code


def say(console: Console, text: str, style: str | None = None) -> None:
    """One `torchjob:` line, never wrapped (tests and log files read whole lines)."""
    console.print(f"torchjob: {text}", style=style, markup=False, highlight=False, soft_wrap=True)


def _print_plan(console: Console, job: TrainingJob, run_dir: Path, urls: dict[int, str]) -> None:
    spec = job.spec
    say(
        console,
        f"running TrainingJob {job.name!r} locally: {spec.nodes} node(s) x {job.nproc_per_node} "
        f"process(es), backend {job.backend}",
    )
    if spec.image:
        say(
            console,
            f"image {spec.image!r} is ignored locally: this Python environment ({sys.prefix}) runs "
            f"{' '.join(spec.command)}",
        )
    say(console, f"run dir {run_dir} (node logs, summaries, checkpoints)")
    latest = checkpoint_files.listed(localplan.checkpoint_dir(run_dir))
    if latest:
        step, path = latest[0]
        say(console, f"resuming from {path} (global step {step}); --fresh starts over")
    warning = storage.ephemeral_warning(job)
    if warning is not None:
        # Locally the run dir keeps them; the same manifest on a cluster would not.
        say(console, f"warning: on a cluster {warning}", style="yellow")
    for index, url in urls.items():
        if spec.elastic is None:
            say(console, f"rank {index} metrics {url}")
        else:  # torchrun assigns elastic ranks at rendezvous: only the agent and local rank are known
            node, local = divmod(index, job.nproc_per_node)
            say(console, f"node {node} local rank {local} metrics {url}")


def _report(
    console: Console,
    job: TrainingJob,
    run_dir: Path,
    result: RunResult,
    *,
    tracker: Tracker,
    scrapes_ok: int,
    plot_path: Path | None,
) -> None:
    files = [localplan.summary_file(run_dir, n) for n in range(job.spec.nodes)]
    from_files = summary.from_summary_files(f for f in files if f.exists())
    rows = summary.merge(from_files, summary.from_tracker(tracker))
    if result.outcome is Outcome.SUCCEEDED and rows and all(r.steps == 0 for r in rows):
        # A rerun of a finished job resumes at its last step; a table of zeros would read as a fault.
        say(
            console,
            "nothing was left to train: the checkpoint resumed from is at the job's last step; "
            "--fresh starts over",
        )
    elif rows:
        console.print(summary.table(rows, title=f"{job.name}: per-rank summary"))
    if scrapes_ok:
        scraped = ", ".join(str(r) for r in sorted(tracker.scraped))
        say(console, f"metrics scraped while running: {scrapes_ok} readings from ranks {scraped}")
    if plot_path is not None:
        from torchjob_cli import plot  # noqa: PLC0415  (matplotlib only with --plot)

        if plot.plot(tracker, plot_path, title=f"{job.name}: throughput and data wait per rank"):
            say(console, f"plot written to {plot_path}")
        else:
            say(console, "no rank reported progress: no plot written")
    restarts = f" after {result.restarts} restart(s)" if result.restarts else ""
    if result.outcome is Outcome.SUCCEEDED:
        say(console, f"{job.name} Succeeded{restarts}", "bold green")
    elif result.outcome is Outcome.INTERRUPTED:
        say(console, f"{job.name} interrupted: every process stopped", "bold yellow")
    else:
        say(console, f"{job.name} Failed{restarts}: {result.message}; node logs in {run_dir}", "bold red")
