"""`torchjob` (also `kubectl torchjob`): run a TrainingJob locally, or drive TrainingJobs on a cluster.

Subcommands import what they need when they run, so `torchjob --help` stays fast and the local run
never needs a kubeconfig.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchjob",
        description="Run TrainingJobs locally as processes, or submit and watch them on a cluster.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_cluster_commands(sub)
    return p


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="run a TrainingJob on this machine: one torchrun agent per node")
    r.add_argument("file", type=Path, help="TrainingJob manifest (YAML)")
    r.add_argument(
        "--workdir",
        type=Path,
        help="run dir for logs, summaries, checkpoints (default ./.torchjob/runs/NAME)",
    )
    r.add_argument(
        "--fresh",
        action="store_true",
        help="delete the run dir's checkpoints and train from step 0 (default: resume from them)",
    )
    r.add_argument("--plot", type=Path, metavar="PNG", help="write throughput and data wait per rank here")
    r.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on stop")
    r.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between metrics scrapes")
    r.add_argument(
        "--show-progress-lines", action="store_true", help="also print the trainer's progress lines"
    )


def _cluster_args(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    sp.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG or ~/.kube/config)")
    sp.add_argument("--context", help="kubeconfig context")
    return sp


def _add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = _cluster_args(sub.add_parser("submit", help="validate a manifest locally, then create or update it"))
    s.add_argument("file", type=Path, help="manifest (YAML; - reads stdin)")
    s.add_argument("--dry-run", action="store_true", help="validate only; print what would be applied")

    g = _cluster_args(
        sub.add_parser("get", help="list TrainingJobs (or one) with phase, nodes, restarts and progress")
    )
    g.add_argument("name", nargs="?")
    g.add_argument("-A", "--all-namespaces", action="store_true")
    g.add_argument(
        "-o",
        "--output",
        choices=["table", "wide", "yaml", "json"],
        default="table",
        help="wide adds samples/s and data wait",
    )

    d = _cluster_args(
        sub.add_parser("describe", help="status, conditions with reasons, pods and recent Events")
    )
    d.add_argument("name")

    lg = _cluster_args(sub.add_parser("logs", help="every rank's pod logs, merged with rank prefixes"))
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--attempt", type=int, help="gang attempt (default: the current one)")
    lg.add_argument("--tail", type=int, help="lines per pod from the end")

    t = _cluster_args(sub.add_parser("top", help="live per-rank throughput and data wait"))
    t.add_argument("name")
    t.add_argument("--prometheus", metavar="URL", help="query this Prometheus instead of the pods")
    t.add_argument("--interval", type=float, default=2.0)
    t.add_argument("--once", action="store_true", help="print one table and exit")

    x = _cluster_args(sub.add_parser("delete", help="delete a TrainingJob (its pods go with it)"))
    x.add_argument("name")
    x.add_argument("--wait", action="store_true", help="wait until it is gone")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # No emoji codes: ":running:" in YAML or a log line must print as written.
    console = Console(highlight=False, emoji=False)
    err = Console(stderr=True, highlight=False, emoji=False)
    from torchjob_core.spec import SpecError  # noqa: PLC0415  (lazy: --help stays fast)

    from torchjob_cli.manifests import ManifestError  # noqa: PLC0415

    try:
        if args.command == "run":
            from torchjob_cli.local import RunOptions, run  # noqa: PLC0415

            return run(
                RunOptions(
                    file=args.file,
                    workdir=args.workdir,
                    plot=args.plot,
                    grace=args.grace,
                    scrape_interval=args.scrape_interval,
                    show_progress_lines=args.show_progress_lines,
                    fresh=args.fresh,
                ),
                console,
            )
        from torchjob_cli import cluster  # noqa: PLC0415  (the kubernetes client only when needed)

        return cluster.dispatch(args, console)
    except SpecError as exc:
        err.print(f"error: invalid TrainingJob {getattr(args, 'file', '')}:", markup=False)
        for e in exc.errors:
            err.print(f"  {e.field}: {e.message}", markup=False)
        return EXIT_USAGE
    except ManifestError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Outside a local run's own handling (e.g. `logs -f`, `top`): nothing of ours is left running.
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
