"""DataLoader benchmark: naive defaults vs torchjob's tuned and autotuned settings on CPU-bound data.

One process trains a small model on the synthetic dataset whose samples cost `--sample-cost-us` of CPU
each (a stand-in for decode and augmentation), for a few short epochs, under three loader setups:

- naive: `num_workers=0`, no pinning, no persistent workers, per-sample `__getitem__` + collate;
- tuned: torchjob's defaults (`num_workers=auto` from the cgroup CPU quota, prefetch 2, persistent
  workers, pinning on CUDA, batched `__getitems__`), after the shared-memory check;
- autotuned: the autotuner's pick among candidate configs, measured for `--autotune-batches` batches;
- tuned-per-sample: the tuned loader on a dataset without `__getitems__` (what batched fetch adds).

It prints throughput (samples/s of the whole run, epochs' start-up included), the ratio to naive, and the
data-wait fraction (time blocked in `next(loader)` / step time). `--json PATH` also writes the results.

    OMP_NUM_THREADS=1 python benchmarks/dataloader.py --sample-cost-us 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import autotune, cpu
from torchjob_trainer.data.datasets import Sample, SyntheticDataset
from torchjob_trainer.data.loader import (
    LoaderSettings,
    make_loader,
    measure_batch_bytes,
    resolve_settings,
    shm_safe,
)
from torchjob_trainer.models import build_model


class PerSample(Dataset[Sample]):
    """The same data without `__getitems__`: what a plain map-style dataset gives the DataLoader."""

    def __init__(self, inner: SyntheticDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Sample:
        return self.inner[index]


def train(dataset: Dataset[Any], settings: LoaderSettings, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(args.model, (3, args.image_size, args.image_size), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader(dataset, None, args.batch_size, settings)
    samples, wait, step_total = 0, 0.0, 0.0
    start = time.perf_counter()
    for _ in range(args.epochs):
        batches = iter(loader)
        for _ in range(args.steps_per_epoch):
            t0 = time.perf_counter()
            x, y = next(batches)
            t1 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            t2 = time.perf_counter()
            samples += int(y.shape[0])
            wait += t1 - t0
            step_total += t2 - t0
        del batches
    wall = time.perf_counter() - start
    del loader
    return {
        "samples_per_second": samples / wall,
        "data_wait_ratio": wait / step_total if step_total else 0.0,
        "wall_seconds": wall,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = SyntheticDataset(args.dataset_size, (3, args.image_size, args.image_size), 10, args.sample_cost_us)
    budget = cpu.cpu_budget()
    config = TrainerConfig(batch_size=args.batch_size)
    tuned = resolve_settings(config, local_world_size=1, cuda=torch.cuda.is_available(), budget=budget)
    tuned = shm_safe(
        tuned, batch_bytes=measure_batch_bytes(data, args.batch_size), local_world_size=1, shm_path="/dev/shm"
    )

    def measure(s: LoaderSettings) -> autotune.Measurement:
        loader = make_loader(data, None, args.batch_size, replace(s, persistent_workers=False))
        rate, first = autotune.time_batches(loader, args.autotune_batches, args.batch_size)
        del loader
        return autotune.Measurement(s, rate, first)

    tune_start = time.perf_counter()
    autotuned, _ = autotune.autotune(autotune.candidates(tuned, budget.cpus), measure)
    tune_seconds = time.perf_counter() - tune_start

    naive = LoaderSettings(num_workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=2)
    configs: list[tuple[str, Dataset[Any], LoaderSettings]] = [
        ("naive", PerSample(data), naive),
        ("tuned", data, tuned),
        ("autotuned", data, autotuned),
        # The tuned loader without batched fetch: isolates what __getitems__ adds.
        ("tuned-per-sample", PerSample(data), tuned),
    ]
    # Interleave repeats so that background load hits every config alike; report the median run.
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configs}
    for _ in range(args.repeat):
        for name, dataset, settings in configs:
            runs[name].append(train(dataset, settings, args))
    rows: list[dict[str, Any]] = []
    for name, _, settings in configs:
        ordered = sorted(runs[name], key=lambda r: r["samples_per_second"])
        median = ordered[len(ordered) // 2]
        spread = [round(r["samples_per_second"], 1) for r in ordered]
        rows.append({"name": name, "settings": asdict(settings), **median, "runs_samples_per_second": spread})
    base = rows[0]["samples_per_second"]
    for row in rows:
        row["speedup_vs_naive"] = row["samples_per_second"] / base
    return {
        "machine": {
            "cpus": budget.cpus,
            "cpu_source": budget.source,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "params": vars(args) | {"json": None},
        "autotune_seconds": tune_seconds,
        "rows": rows,
    }


def format_rows(result: dict[str, Any]) -> str:
    header = f"{'config':<16} {'workers':>7} {'prefetch':>8} {'persist':>7} {'samples/s':>10}"
    lines = [f"{header} {'vs naive':>8} {'data wait':>9}"]
    for r in result["rows"]:
        s = r["settings"]
        lines.append(
            f"{r['name']:<16} {s['num_workers']:>7} {s['prefetch_factor']:>8} {s['persistent_workers']!s:>7} "
            f"{r['samples_per_second']:>10.1f} {r['speedup_vs_naive']:>7.2f}x {r['data_wait_ratio']:>9.1%}"
            f"  runs: {r['runs_samples_per_second']}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample-cost-us", type=int, default=500, help="CPU microseconds per sample")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--dataset-size", type=int, default=4096)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--autotune-batches", type=int, default=15)
    p.add_argument("--repeat", type=int, default=3, help="runs per config; the median is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.steps_per_epoch * args.batch_size > args.dataset_size:
        raise SystemExit("--steps-per-epoch x --batch-size must not exceed --dataset-size")
    result = run(args)
    print(format_rows(result))
    print(
        f"cpus={result['machine']['cpus']} ({result['machine']['cpu_source']}), autotune took "
        f"{result['autotune_seconds']:.1f} s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
