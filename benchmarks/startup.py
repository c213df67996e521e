"""Start-up benchmark: time to the first training step of a local run (default: the README example, 2x2).

Runs `torchjob run MANIFEST` (each node a torchrun agent with its processes) and reads every rank's
`start-up phases (seconds): {...}` line (see `torchjob_trainer/startup.py`). It prints, per rank, each
phase from the process's start to the end of its first step, then the job's figures against the goals
of issue 13 (2 cores):

- rendezvous -> first step <= 2 s (from `init_process_group` returning to the first step's end);
- process start -> first step <= 5 s (the trainer process's own start: its fork, for a forked worker);
- launch -> first step: from starting `torchjob run` (agents' start-up and rendezvous included), the
  figure that compares the variants fairly.

Each variant (`VARIANTS`: fork, exec, exec-no-prefetch) runs `--repeat` times, in turn, the order
reversed every other round. The slowest rank of a run is the job's figure (the first step is a
collective); the median over repeats is reported. `--json PATH` writes everything, with the machine and
its load.

Probes: `--skew S` starts two one-process ranks S seconds apart, with and without the background import
of torch._dynamo in each round (where that overlap should pay); `--fork-probe N` times N fresh
interpreters importing the trainer's heavy modules against one import followed by N forks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/startup.py --repeat 3 --skew 6 --fork-probe 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
TORCHJOB = Path(sys.executable).parent / "torchjob"
PREFIX = "start-up phases (seconds): "
LINE = re.compile(r"\[node (\d+) rank (\d+)\] (\S+Z) .*?" + re.escape(PREFIX) + r"(\{.*?\})")
GOALS = {"rendezvous_to_first_step": 2.0, "process_to_first_step": 5.0}
NO_PREFETCH = ["--prefetch-imports", "false"]


@dataclass(frozen=True)
class Variant:
    spec: dict[str, Any]  # spec fields set on the manifest
    args: list[str]  # trainer flags appended to spec.args


# `fork`, the default: torchjob-launch forks every worker from a server that imported torch, torch._dynamo
# and the trainer once per node (trainer/torchjob_trainer/forkstart.py). `exec`: plain torchrun starts each
# worker as a new program that imports them itself, with torch._dynamo imported in a thread while the
# rendezvous waits (the start before forkstart). `exec-no-prefetch`: the first optimizer imports it.
VARIANTS = {
    "fork": Variant({}, []),
    "exec": Variant({"launcher": "torchrun"}, []),
    "exec-no-prefetch": Variant({"launcher": "torchrun"}, NO_PREFETCH),
}
# The skewed start runs the trainer program itself, one process per rank, with and without the prefetch.
SKEW_VARIANTS = {"prefetch": [], "no-prefetch": NO_PREFETCH}


@dataclass
class RankStartup:
    node: int
    rank: int
    phases: dict[str, float]
    logged_at: float  # wall clock of the line, right after the first step

    @property
    def process_to_first_step(self) -> float:
        return sum(self.phases.values())

    @property
    def rendezvous_to_first_step(self) -> float:
        names = list(self.phases)
        after = names[names.index("rendezvous") + 1 :] if "rendezvous" in names else names
        return sum(self.phases[n] for n in after)


def parse_ranks(output: str) -> list[RankStartup]:
    ranks = []
    for m in LINE.finditer(output):
        logged = datetime.strptime(m.group(3), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        ranks.append(RankStartup(int(m.group(1)), int(m.group(2)), json.loads(m.group(4)), logged))
    return sorted(ranks, key=lambda r: r.rank)


def manifest_with(manifest: Path, variant: Variant, directory: Path) -> Path:
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"].update(variant.spec)
    doc["spec"]["args"] = [*doc["spec"].get("args", []), *variant.args]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / manifest.name
    path.write_text(yaml.safe_dump(doc))
    return path


def run_once(manifest: Path, workdir: Path) -> tuple[float, list[RankStartup], float]:
    """One local run: its launch wall clock, every rank's start-up, and the run's wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    launched = time.time()
    done = subprocess.run(
        [str(TORCHJOB), "run", str(manifest), "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(
            f"torchjob run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return launched, parse_ranks(done.stdout + done.stderr), took


def job_figures(launched: float, ranks: list[RankStartup]) -> dict[str, float]:
    """The slowest rank's figures: every rank waits for it at the first step's all-reduce."""
    return {
        "process_to_first_step": round(max(r.process_to_first_step for r in ranks), 3),
        "rendezvous_to_first_step": round(max(r.rendezvous_to_first_step for r in ranks), 3),
        "launch_to_first_step": round(max(r.logged_at for r in ranks) - launched, 3),
    }


def print_ranks(name: str, ranks: list[RankStartup]) -> None:
    names = list(dict.fromkeys(n for r in ranks for n in r.phases))
    print(f"\n{name}: phases per rank (seconds)")
    print(f"{'phase':>14} " + " ".join(f"{'rank ' + str(r.rank):>8}" for r in ranks))
    for n in names:
        print(f"{n:>14} " + " ".join(f"{r.phases.get(n, 0.0):>8.3f}" for r in ranks))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


HEAVY = "import torch._dynamo, torchjob_trainer.train"
# A launcher that pre-imports, then forks its workers: each child finds the modules loaded, and exits.
PRELOAD_THEN_FORK = f"""
{HEAVY}
import os
pids = []
for _ in range({{procs}}):
    pid = os.fork()
    if pid == 0:
        {HEAVY}
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""


def fork_probe(procs: int) -> dict[str, float]:
    """What pre-importing in the launcher could save: `procs` fresh interpreters importing the trainer's
    heavy modules at once, against one import in a parent that then forks `procs` children.

    The launcher starts workers as new programs (torchrun's subprocess start), so today nothing it
    imports reaches them; only a fork-based start would make their imports free.
    """
    started = time.monotonic()
    fresh = [subprocess.Popen([sys.executable, "-c", HEAVY]) for _ in range(procs)]
    if any(p.wait() != 0 for p in fresh):
        raise SystemExit("a fresh interpreter failed to import the trainer")
    fresh_s = time.monotonic() - started
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", PRELOAD_THEN_FORK.format(procs=procs)], check=True)
    forked_s = time.monotonic() - started
    return {"procs": procs, "fresh_imports_s": round(fresh_s, 3), "preload_then_fork_s": round(forked_s, 3)}


TRAIN = Path(sys.executable).parent / "torchjob-train"
SKEW_ARGS = ["--steps-per-epoch", "3", "--num-workers", "0", "--metrics-port", "0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alternate(names: list[str], index: int) -> list[str]:
    """The variants in turn, the order reversed every other round: the second run of a pair on this
    machine was 1-3 s faster whichever variant it was (warm caches), so a fixed order favours one."""
    return names if index % 2 == 0 else names[::-1]


def skewed_start(delay: float, index: int) -> dict[str, dict[str, float]]:
    """Two one-process ranks, the second started `delay` s after the first (pods that start apart): the
    job's wall time to the end of both runs and each rank's time to its first step, per variant."""
    out: dict[str, dict[str, float]] = {}
    for name in alternate(list(SKEW_VARIANTS), index):
        extra = SKEW_VARIANTS[name]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
        }
        env.update(WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        started = time.monotonic()
        procs = []
        for rank in (0, 1):
            if rank:
                time.sleep(delay)
            argv = [str(TRAIN), *SKEW_ARGS, *extra]
            procs.append(
                subprocess.Popen(argv, env={**env, "RANK": str(rank)}, stderr=subprocess.PIPE, text=True)
            )
        logs = [p.communicate()[1] for p in procs]
        wall = time.monotonic() - started
        firsts = [re.search(r"first step ([\d.]+) s after process start", text) for text in logs]
        out[name] = {"wall_s": round(wall, 3)}
        for rank, m in enumerate(firsts):
            out[name][f"rank{rank}_process_to_first_step_s"] = float(m.group(1)) if m else float("nan")
    return out


def measure_run(name: str, manifest: Path, index: int, tmp: Path) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    launched, ranks, took = run_once(manifest, tmp / f"{name}-{index}")
    figures = job_figures(launched, ranks)
    print_ranks(f"{name} run {index + 1} (load {load:.2f} at its start)", ranks)
    print("  job: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()))
    return {
        "figures": figures,
        "load": load,
        "wall_seconds": round(took, 3),
        "ranks": [asdict(r) for r in ranks],
    }


def run_variants(names: list[str], manifest: Path, repeat: int, tmp: Path) -> dict[str, Any]:
    """Runs the variants in turn, `repeat` rounds, so that a change in the machine's load hits all alike."""
    manifests = {name: manifest_with(manifest, VARIANTS[name], tmp / name) for name in names}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(repeat):
        for name in alternate(names, index):
            runs[name].append(measure_run(name, manifests[name], index, tmp))
    return {
        name: {
            "runs": done,
            "median": {k: statistics.median(r["figures"][k] for r in done) for k in done[0]["figures"]},
        }
        for name, done in runs.items()
    }


def print_table(results: dict[str, Any]) -> None:
    before, after = results["machine_before"], results["machine_after"]
    print(f"\nmachine: {after['cpus']} CPUs, load {before['load_average']} -> {after['load_average']}")
    print("median of the slowest rank; goal ratio = figure / goal (<= 1 meets it)")
    header = ("variant", "launch->1st", "process->1st", "rdzv->1st", "process/5s", "rdzv/2s")
    print(" ".join(f"{h:>12}" for h in header))
    for name, v in results["variants"].items():
        m = v["median"]
        process, rdzv = m["process_to_first_step"], m["rendezvous_to_first_step"]
        row = (
            m["launch_to_first_step"],
            process,
            rdzv,
            process / GOALS["process_to_first_step"],
            rdzv / GOALS["rendezvous_to_first_step"],
        )
        print(f"{name:>12} " + " ".join(f"{x:>12.2f}" for x in row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--manifest", type=Path, default=REPO / "examples" / "cpu-gloo-2node.yaml")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--no-local-run", action="store_true", help="only the probes (--skew, --fork-probe)")
    p.add_argument("--skew", type=float, metavar="SECONDS", help="also run two ranks started this far apart")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--fork-probe", type=int, metavar="PROCS", help="also time PROCS fresh imports vs one + fork"
    )
    args = p.parse_args()
    results: dict[str, Any] = {"machine_before": machine(), "manifest": str(args.manifest), "variants": {}}
    with tempfile.TemporaryDirectory(prefix="torchjob-startup-") as tmp:
        if not args.no_local_run:
            results["variants"] = run_variants(
                args.variants.split(","), args.manifest, args.repeat, Path(tmp)
            )
    if args.fork_probe:
        results["fork_probe"] = fork_probe(args.fork_probe)
    if args.skew is not None:
        results["skewed_start"] = [skewed_start(args.skew, i) for i in range(args.repeat)]
    results["machine_after"] = machine()
    print_table(results)
    if args.fork_probe:
        print("fork probe (seconds): " + json.dumps(results["fork_probe"]))
    for i, skewed in enumerate(results.get("skewed_start", [])):
        print(f"skewed start {args.skew} s, round {i + 1}: " + json.dumps(skewed))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
