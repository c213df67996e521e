"""DDP scaling on one host, CPU and gloo: E(n) for n ranks as real processes on 127.0.0.1.

For each n (default 1, 2, 4) n processes train the same model (`--model`) with the same per-rank batch
on in-memory tensors (no loader: the scaling of DDP alone), `--warmup` steps and then `--steps` timed
steps, each rank with OMP_NUM_THREADS=`--threads`. The 1-rank run also times the model without DDP, in
the same process, as the reference for the communication estimate. Per n it reports (performance.md
section 2.2 and goal 9):

- total samples/s: n * batch * steps / the slowest rank's timed wall time;
- E(n) = throughput(n) / (n * throughput(1)), throughput(1) being DDP in a world of one;
- E against the cores bound: throughput(n) / (min(n, cpus / threads) * throughput(1)), because on a host
  with fewer cores than ranks the ranks share the cores and n-fold throughput is out of reach;
- the mean step time over the ranks and the exposed communication per step:
  T_step(DDP, n) - T_step(no DDP, 1 rank).

`--save FILE` writes the result JSON; `--baseline FILE` compares each n's E with a saved result and
prints the ratio, with "regression" below 0.9 (goal 9: no regression over 10%). It only prints: the exit
status does not depend on the comparison.

    python benchmarks/ddp_scaling.py --model cnn --save /tmp/ddp_scaling.json
    python benchmarks/ddp_scaling.py --model cnn --baseline benchmarks/baselines/ddp_scaling_cpu2.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ddp_overhead, also when loaded by path

import torch
import torch.distributed as dist
import torchjob_trainer
from ddp_overhead import Batch, free_port, make_batches, make_step, timed_block
from torch.nn.parallel import DistributedDataParallel
from torchjob_trainer import distributed
from torchjob_trainer.data.cpu import cpu_budget
from torchjob_trainer.models import build_model

REGRESSION_RATIO = 0.9  # goal 9: no regression over 10%
COMPARED_PARAMS = ("model", "batch_size", "image_size", "threads")


def timed(step: Callable[[Batch], None], batches: list[Batch], args: argparse.Namespace) -> dict[str, float]:
    timed_block(step, batches, args.warmup)  # allocations, DDP's bucket rebuild after iteration 1
    if dist.is_initialized():
        dist.barrier()
    wall, cpu = timed_block(step, batches, args.steps)
    return {
        "samples_per_second": args.steps * args.batch_size / wall,
        "step_seconds": wall / args.steps,
        "cpu_seconds_per_step": cpu / args.steps,
        "wall_seconds": wall,
    }


def worker(args: argparse.Namespace) -> None:
    """One rank: DDP steps (and, in a world of one, the plain model first); its timings to `--out`."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    shape = (3, args.image_size, args.image_size)
    batches = make_batches(args.batch_size, shape, device, seed=args.rank)
    result: dict[str, Any] = {"rank": args.rank, "torch_threads": torch.get_num_threads()}
    if args.world == 1:
        torch.manual_seed(0)
        result["plain"] = timed(make_step(build_model(args.model, shape, 10)), batches, args)
    dist.init_process_group("gloo", init_method=args.init_url, world_size=args.world, rank=args.rank)
    try:
        result["ddp"] = timed_ddp(shape, batches, args)
        dist.barrier()
    finally:
        distributed.teardown()  # after timed_ddp returned: its DDP is gone before the group
    Path(args.out).write_text(json.dumps(result))


def timed_ddp(
    shape: tuple[int, int, int], batches: list[Batch], args: argparse.Namespace
) -> dict[str, float]:
    torch.manual_seed(0)
    return timed(make_step(DistributedDataParallel(build_model(args.model, shape, 10))), batches, args)


def worker_argv(args: argparse.Namespace, n: int, rank: int, url: str, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--world", str(n), "--rank", str(rank)]
    argv += ["--init-url", url, "--out", str(out), "--model", args.model, "--threads", str(args.threads)]
    argv += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    return [*argv, "--warmup", str(args.warmup), "--steps", str(args.steps)]


def worker_env(threads: int) -> dict[str, str]:
    """The ranks import the same torchjob_trainer as this process, whatever its PYTHONPATH."""
    package_root = str(Path(torchjob_trainer.__file__).resolve().parents[1])
    path = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(path)}


def run_ranks(args: argparse.Namespace, n: int) -> list[dict[str, Any]]:
    """n rank processes, gloo over 127.0.0.1; their results by rank."""
    url = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        outs = [Path(tmp) / f"rank{r}.json" for r in range(n)]
        procs = [
            subprocess.Popen(
                worker_argv(args, n, r, url, outs[r]),
                env=worker_env(args.threads),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(n)
        ]
        failed = []
        deadline = time.monotonic() + args.timeout
        for r, proc in enumerate(procs):
            try:
                output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"rank {r} of {n} exited {proc.returncode}:\n{output[-2000:]}")
        if failed:
            raise RuntimeError("\n".join(failed))
        return [json.loads(out.read_text()) for out in outs]


def summarize(
    n: int, ranks: list[dict[str, Any]], args: argparse.Namespace, cpus: float, ref: dict[str, float]
) -> dict[str, Any]:
    """One row; `ref` holds the 1-rank DDP throughput and the plain 1-rank step time."""
    ddp = [r["ddp"] for r in ranks]
    total = n * args.batch_size * args.steps / max(d["wall_seconds"] for d in ddp)
    step = sum(d["step_seconds"] for d in ddp) / n
    one = ref["samples_per_second"]
    cores = min(float(n), max(1.0, cpus / args.threads))
    row = {
        "n": n,
        "samples_per_second": total,
        "efficiency": total / (n * one),
        "cores_bound": cores,
        "efficiency_cores_bound": total / (cores * one),
        "step_seconds": step,
        "exposed_comm_seconds": step - ref["plain_step_seconds"],
    }
    return {k: round(v, 6) for k, v in row.items()} | {
        "ranks": [
            {"rank": r["rank"]} | {k: round(v, 6) for k, v in r["ddp"].items() if k != "wall_seconds"}
            for r in ranks
        ],
    }


def compare(result: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Per n in both: E now / E of the baseline, "regression" below REGRESSION_RATIO."""
    old = {row["n"]: row for row in baseline.get("rows", [])}
    out = []
    for row in result["rows"]:
        base = old.get(row["n"])
        if base is None:
            out.append({"n": row["n"], "efficiency": row["efficiency"], "verdict": "no baseline"})
            continue
        ratio = row["efficiency"] / base["efficiency"]
        verdict = "regression" if ratio < REGRESSION_RATIO else "ok"
        out.append(
            {
                "n": row["n"],
                "efficiency": row["efficiency"],
                "baseline_efficiency": base["efficiency"],
                "ratio": round(ratio, 6),
                "verdict": verdict,
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = cpu_budget()
    load_start = os.getloadavg()
    print(
        f"cpus {budget.cpus:g} ({budget.source}), os.cpu_count {os.cpu_count()}, "
        f"load average (1 min) at start {load_start[0]:.2f}",
        flush=True,
    )
    ns = sorted({1, *args.ranks})  # n=1 is the reference of E(n) and of the communication estimate
    ref: dict[str, float] = {}
    rows = []
    for n in ns:
        ranks = run_ranks(args, n)
        if n == 1:
            ref = {
                "samples_per_second": ranks[0]["ddp"]["samples_per_second"],
                "plain_step_seconds": ranks[0]["plain"]["step_seconds"],
                "plain_samples_per_second": ranks[0]["plain"]["samples_per_second"],
            }
        rows.append(summarize(n, ranks, args, budget.cpus, ref))
    load_end = os.getloadavg()
    print(f"load average (1 min) at end {load_end[0]:.2f}", flush=True)
    return {
        "benchmark": "ddp_scaling",
        "backend": "gloo",
        "params": {k: v for k, v in vars(args).items() if k in (*COMPARED_PARAMS, "warmup", "steps")},
        "torch": torch.__version__,
        "cpus": budget.cpus,
        "cpu_source": budget.source,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "plain_1": {
            "samples_per_second": round(ref["plain_samples_per_second"], 6),
            "step_seconds": round(ref["plain_step_seconds"], 6),
        },
        "rows": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    p = result["params"]
    print(
        f"DDP scaling (gloo, {p['model']}, batch {p['batch_size']} per rank, {p['threads']} thread(s) "
        f"per rank, {p['steps']} steps): plain 1 rank {result['plain_1']['samples_per_second']:.1f} "
        f"samples/s, {result['plain_1']['step_seconds'] * 1e3:.2f} ms/step"
    )
    print(f"{'n':>3} {'samples/s':>10} {'E(n)':>6} {'E cores':>8} {'step ms':>8} {'comm ms':>8}")
    for row in result["rows"]:
        print(
            f"{row['n']:>3} {row['samples_per_second']:>10.1f} {row['efficiency']:>6.3f} "
            f"{row['efficiency_cores_bound']:>8.3f} {row['step_seconds'] * 1e3:>8.2f} "
            f"{row['exposed_comm_seconds'] * 1e3:>8.2f}"
        )
    for row in result.get("baseline", {}).get("rows", []):
        if "ratio" in row:
            print(
                f"  n={row['n']}: E {row['efficiency']:.3f} / baseline {row['baseline_efficiency']:.3f} "
                f"= {row['ratio']:.3f} {row['verdict']}"
            )
        else:
            print(f"  n={row['n']}: {row['verdict']}")


def parse_ranks(text: str) -> list[int]:
    ranks = sorted({int(x) for x in text.split(",") if x.strip()})
    if not ranks or ranks[0] < 1:
        raise argparse.ArgumentTypeError(f"rank counts must be >= 1: {text!r}")
    return ranks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=parse_ranks, default=[1, 2, 4], help="rank counts, e.g. 1,2,4")
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn", "resnet18"])
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and torch threads per rank")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=50, help="timed steps per rank")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the ranks of one n")
    p.add_argument("--save", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--baseline", type=Path, default=None, help="compare E(n) with this saved result")
    worker_args = p.add_argument_group("rank process (internal)")
    worker_args.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    worker_args.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    worker_args.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    worker_args.add_argument("--init-url", default="", help=argparse.SUPPRESS)
    worker_args.add_argument("--out", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    result = run(args)
    if args.baseline is not None:
        baseline = json.loads(args.baseline.read_text())
        differ = {
            k: (baseline.get("params", {}).get(k), result["params"][k])
            for k in COMPARED_PARAMS
            if baseline.get("params", {}).get(k) != result["params"][k]
        }
        result["baseline"] = {"file": str(args.baseline), "rows": compare(result, baseline)}
        if differ:
            result["baseline"]["params_differ"] = differ
            print(f"note: the baseline was measured with other settings (baseline, now): {differ}")
    print(json.dumps(result))
    print_table(result)
    if args.save is not None:
        saved = {k: v for k, v in result.items() if k != "baseline"}
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(saved) + "\n")
    return result


if __name__ == "__main__":
    main()
