"""DataLoader benchmark: naive defaults vs torchjob's tuned and autotuned settings, against the bound.

One process trains a small model for a few short epochs on one of two pipelines:

- `--pipeline synthetic`: samples that cost `--sample-cost-us` of CPU each (a stand-in for decode);
- `--pipeline jpeg`: real decode work: in-memory JPEGs it generates, decoded with PIL and augmented
  with torchvision transforms v2 (RandomResizedCrop, flip, float, normalise), per sample,

under these loader setups:

- naive: `num_workers=0`, no pinning, no persistent workers, per-sample `__getitem__` + collate;
- tuned: torchjob's defaults (`num_workers=auto` from the cgroup CPU quota, prefetch 2, persistent
  workers, pinning on CUDA, batched `__getitems__`, `file_system` sharing, workers at nice 10), after
  the shared-memory check;
- autotuned: the autotuner's pick among candidate configs, measured for `--autotune-batches` batches;
- tuned-per-sample: the tuned loader on a dataset without `__getitems__` (what batched fetch adds);
- tuned-torch: the tuned loader handing batches over as torch does, a new shared-memory file per
  tensor, instead of through slots each worker reuses (`--loader-slots`: what the slots add);
- tuned-fd: torch's hand-over with torch's default `file_descriptor` sharing strategy instead of
  torchjob's `file_system` (what naming shared memory instead of passing descriptors adds);
- tuned-nice0: the tuned loader with its workers as nice as the training process, torch's way
  (`--loader-worker-nice 0`: what letting the training step run first adds).

- `workers=N` (with `--sweep N,M`): the tuned loader at a fixed worker count; `workers=N nice=K` (with
  `--sweep-nice K`): the tuned and swept worker counts again with the workers at niceness K, less any
  config a row above already runs.

It prints throughput (samples/s of the whole run, epochs' start-up included), the ratio to naive, the
fraction of the overlap bound, and the data-wait fraction (time blocked in `next(loader)` / step time).
The bound is what perfect overlap of loading and training on every CPU would give:
`cpus / (fetch CPU seconds + step CPU seconds per sample)`, both measured in this run in-process.
The busy bound is the same with the same fetch and step running on every CPU at once (`contention`):
on a host whose cores share something a CPU second costs more when all are busy, and a loader that keeps
them busy is judged against what they can then give (`of busy`).

Per config also the loader headroom (performance.md goal 2), timed as benchmarks/gpu_check.py times it
(`steptiming`): loader-only samples/s (the loader iterated with no step, after its start-up batches) /
model-only samples/s (the step alone on one cached batch), H = their ratio. On CPU the two run alone on
the same cores that a training run makes them share, so this H is not the GPU's H (where the step runs on
the device); it says which side is faster here, not that a GPU would be fed.

Per config also where its CPU went (`cpuacct`, Linux): idle and steal shares, CPU per sample in the
training process, its workers and the rest of the machine, and how much of the fraction of the bound
they explain: `(1 - idle - steal) / (CPU spent per sample / (fetch + step in-process))`.

Then epoch-2 first-batch latency (goal 3): the tuned loader as the trainer runs it (one iterator over
both epochs, `RunSampler`), and with an iterator per epoch with persistent workers and without: one
whole short epoch of `--steps-per-epoch` steps, then the time from `iter(loader)` of epoch 2 (or, with
one iterator, from the end of epoch 1's last step) to its first batch, divided by the median step wall
time of epoch 1 (goal: <= 1).
`--json PATH` also writes the results; the load average is printed at start and end.

    OMP_NUM_THREADS=1 python benchmarks/dataloader.py --sample-cost-us 500
    OMP_NUM_THREADS=1 python benchmarks/dataloader.py --pipeline jpeg --model cnn --sweep 3,4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # steptiming, also when loaded by path

import contention
import cpuacct
import torch
from steptiming import steady_steps
from torch import nn
from torch.utils.data import Dataset, DistributedSampler
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import autotune, cpu
from torchjob_trainer.data.datasets import Sample, SyntheticDataset
from torchjob_trainer.data.jpeg import JpegDataset
from torchjob_trainer.data.loader import (
    LoaderSettings,
    RunSampler,
    fetch_batch,
    make_loader,
    resolve_settings,
    shm_safe,
)
from torchjob_trainer.data.probe import probe_fetch
from torchjob_trainer.models import build_model

BOUND_BATCHES = 12
NOTES = [
    "headroom H = loader-only samples/s / model-only samples/s. On CPU each side is timed alone on the "
    "same cores that a training run makes the loader workers and the step share, so the CPU H is not the "
    "GPU's H (on a GPU the step runs on the device); goal 2 (H >= 1.2) is for the GPU reference config.",
    "loader-only: the loader with no step (no device copy on CPU), after 1 + workers x prefetch untimed "
    "start-up batches; model-only: the training step on one cached batch, after 2 untimed steps.",
    "epoch2_first_batch_in_steps: seconds from iter(loader) of epoch 2 (one iterator: from the end of "
    "epoch 1's last step) to its first batch / the median "
    "step wall time (wait included) of epoch 1, after one whole epoch of --steps-per-epoch steps; "
    "goal 3: <= 1; the trainer runs one iterator over every epoch (RunSampler).",
]


class PerSample(Dataset[Sample]):
    """The same data without `__getitems__`: what a plain map-style dataset gives the DataLoader."""

    def __init__(self, inner: Dataset[Sample]) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        return self.inner[index]


def make_step(args: argparse.Namespace) -> autotune.StepFn:
    """A fresh model's training step: (inputs, targets) -> forward, backward, SGD."""
    torch.manual_seed(0)
    model = build_model(args.model, (3, args.image_size, args.image_size), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch: Any) -> None:
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def cpu_per_sample(data: Dataset[Any], args: argparse.Namespace) -> tuple[float, float]:
    """CPU seconds per sample to fetch and to train, in this process (the fetch after one untimed pass,
    the step after 2 untimed steps: first-call allocations)."""
    bs = args.batch_size
    size = len(data)  # type: ignore[arg-type]  # our datasets are sized
    indices = [[j % size for j in range(i * bs, (i + 1) * bs)] for i in range(BOUND_BATCHES)]
    batches = [fetch_batch(data, ix) for ix in indices]
    start = time.process_time()
    batches = [fetch_batch(data, ix) for ix in indices]
    fetch = (time.process_time() - start) / (BOUND_BATCHES * bs)
    step = make_step(args)
    for batch in batches[:2]:
        step(batch)
    start = time.process_time()
    for batch in batches:
        step(batch)
    return fetch, (time.process_time() - start) / (BOUND_BATCHES * bs)


def one_thread_cpu_per_sample(data: Dataset[Any], args: argparse.Namespace) -> tuple[float, float]:
    """`cpu_per_sample` in a forked child on one thread, as a DataLoader worker runs: an OpenMP pool
    the parent used does not survive the fork (the child's first parallel op would hang)."""
    torch.set_num_threads(1)
    return cpu_per_sample(data, args)


def measure_bound(data: Dataset[Any], args: argparse.Namespace, cpus: float) -> dict[str, float]:
    """The bound, cpus / (fetch + step CPU per sample) in-process with nothing else running, and the
    busy bound: the same with the same work running on every CPU at once (`contention`)."""
    fetch, train = cpu_per_sample(data, args)
    busy = contention.at_once(lambda: one_thread_cpu_per_sample(data, args), cpus)
    busy_fetch = statistics.mean(f for f, _ in busy)
    busy_train = statistics.mean(t for _, t in busy)
    return {
        "fetch_cpu_seconds_per_sample": fetch,
        "step_cpu_seconds_per_sample": train,
        "bound_samples_per_second": cpus / (fetch + train),
        "busy_fetch_cpu_seconds_per_sample": busy_fetch,
        "busy_step_cpu_seconds_per_sample": busy_train,
        "busy_bound_samples_per_second": cpus / (busy_fetch + busy_train),
    }


def train(dataset: Dataset[Any], settings: LoaderSettings, args: argparse.Namespace) -> dict[str, float]:
    step = make_step(args)
    loader = make_loader(dataset, None, args.batch_size, settings)
    samples, wait, step_total = 0, 0.0, 0.0
    cpu_start = cpuacct.snapshot()
    start = time.perf_counter()
    for _ in range(args.epochs):
        batches = iter(loader)
        for _ in range(args.steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            step(batch)
            t2 = time.perf_counter()
            samples += int(batch[1].shape[0])
            del batch
            wait += t1 - t0
            step_total += t2 - t0
        del batches
    wall = time.perf_counter() - start
    cpu_end = cpuacct.snapshot()  # before the workers exit: their CPU time goes with them
    del loader
    result = {
        "samples_per_second": samples / wall,
        "data_wait_ratio": wait / step_total if step_total else 0.0,
        "wall_seconds": wall,
    }
    if cpu_start is not None and cpu_end is not None:
        spent = cpuacct.usage(cpu_start, cpu_end, samples)
        result |= asdict(spent) | {"cpu_seconds_per_sample": spent.cpu_seconds_per_sample}
    return result


def no_step(_batch: Any) -> None:
    """The loader-only step: nothing (on CPU there is no copy to a device); the batch is dropped."""


def loader_only(dataset: Dataset[Any], settings: LoaderSettings, args: argparse.Namespace) -> float:
    """Samples/s the loader delivers with no step, timed after the batches in flight at start-up."""
    warmup = settings.batches_in_flight()
    size = len(dataset)  # type: ignore[arg-type]
    # Enough indices for the start-up and the timed batches, whatever the dataset's size.
    sampler = [i % size for i in range((warmup + args.headroom_batches) * args.batch_size)]
    loader = make_loader(dataset, sampler, args.batch_size, settings)
    rate = steady_steps(iter(loader), no_step, warmup, args.headroom_batches).samples_per_second
    del loader
    return rate


def model_only(data: Dataset[Any], args: argparse.Namespace) -> float:
    """Samples/s of the training step alone, on one cached batch (no loader)."""
    step = make_step(args)
    batch = fetch_batch(data, list(range(args.batch_size)))
    return steady_steps(itertools.repeat(batch), step, 2, args.headroom_batches).samples_per_second


def epoch_two_first_batch(
    dataset: Dataset[Any], settings: LoaderSettings, args: argparse.Namespace, *, one_iterator: bool
) -> dict[str, float]:
    """One whole epoch of `--steps-per-epoch` steps, then the wait for epoch 2's first batch: from its
    `iter(loader)` (worker start-up again without persistent workers, a resumed fetch with them), or, with
    `one_iterator` (what the trainer does: RunSampler), the next batch of the same iterator."""
    step = make_step(args)
    steps = args.steps_per_epoch
    if one_iterator:
        share: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=1, rank=0, drop_last=True)
        sampler: Any = RunSampler(share, batch_size=args.batch_size, epochs=2)
        sampler.cap_steps(steps)
    else:
        sampler = list(range(steps * args.batch_size))
    loader = make_loader(dataset, sampler, args.batch_size, settings)
    times: list[float] = []
    batches = iter(loader)
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        step(batch)
        del batch
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    if not one_iterator:
        del batches
        batches = iter(loader)
    first = next(batches)
    latency = time.perf_counter() - t0
    del first, batches, loader
    median = statistics.median(times)
    return {
        "epoch2_first_batch_seconds": latency,
        "epoch1_median_step_seconds": median,
        "epoch2_first_batch_in_steps": latency / median,
    }


def serial_cpu(bound: dict[str, float]) -> float:
    """CPU seconds per sample of fetch and step done one after the other, in-process."""
    return bound["fetch_cpu_seconds_per_sample"] + bound["step_cpu_seconds_per_sample"]


def median_by(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[len(ordered) // 2]


def build_data(args: argparse.Namespace) -> Dataset[Any]:
    if args.pipeline == "jpeg":
        return JpegDataset(args.dataset_size, args.image_size, 10)
    return SyntheticDataset(args.dataset_size, (3, args.image_size, args.image_size), 10, args.sample_cost_us)


def autotuned(
    data: Dataset[Any], tuned: LoaderSettings, cpus: float, args: argparse.Namespace
) -> LoaderSettings:
    """The autotuner's pick, measured with a training step running, as the trainer does it."""
    step = make_step(args)

    def measure(s: LoaderSettings) -> autotune.Measurement:
        return autotune.measure_candidate(
            data, None, s, step, batches=args.autotune_batches, batch_size=args.batch_size
        )

    best, _ = autotune.autotune(autotune.candidates(tuned, cpus), measure, max_seconds=args.autotune_seconds)
    return best


def configs_to_run(
    data: Dataset[Any],
    tuned: LoaderSettings,
    picked: LoaderSettings,
    sweep: list[int],
    sweep_nice: list[int],
) -> list[tuple[str, Dataset[Any], LoaderSettings]]:
    naive = LoaderSettings(num_workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=2)
    configs: list[tuple[str, Dataset[Any], LoaderSettings]] = [
        ("naive", PerSample(data), naive),
        ("tuned", data, tuned),
        ("autotuned", data, picked),
        # The tuned loader without batched fetch: isolates what __getitems__ adds.
        ("tuned-per-sample", PerSample(data), tuned),
        # The tuned loader with torch's hand-over (data/slots.py): what the slots add; and with torch's
        # default strategy too (data/workers.py): what file_system adds.
        ("tuned-torch", data, replace(tuned, slots=False)),
        ("tuned-fd", data, replace(tuned, slots=False, sharing="file_descriptor")),
        # Workers as nice as the training process (torch's way): what --loader-worker-nice adds.
        ("tuned-nice0", data, replace(tuned, worker_nice=0)),
    ]
    configs += [(f"workers={n}", data, replace(tuned, num_workers=n)) for n in sweep]
    # At niceness K again, but not a config the table already runs (the tuned count at 0 is tuned-nice0).
    present = {settings for _, dataset, settings in configs if dataset is data}
    niced = (
        replace(tuned, num_workers=n, worker_nice=k)
        for k in sweep_nice
        for n in sorted({tuned.num_workers, *sweep})
    )
    configs += [(f"workers={s.num_workers} nice={s.worker_nice}", data, s) for s in niced if s not in present]
    return configs


def latency_configs(tuned: LoaderSettings) -> list[tuple[str, LoaderSettings, bool]]:
    """The tuned loader (at least one worker: persistence means nothing in-process) as the trainer runs
    it, one iterator over both epochs; and an iterator per epoch with and without persistent workers."""
    workers = replace(tuned, num_workers=max(1, tuned.num_workers))
    return [
        ("one iterator", replace(workers, persistent_workers=True), True),
        ("persistent", replace(workers, persistent_workers=True), False),
        ("non-persistent", replace(workers, persistent_workers=False), False),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    cpuacct.disown_present()
    data = build_data(args)
    budget = cpu.cpu_budget()
    config = TrainerConfig(batch_size=args.batch_size)
    fetch = probe_fetch(data, args.batch_size)
    tuned = resolve_settings(
        config, local_world_size=1, cuda=torch.cuda.is_available(), budget=budget, probe=fetch
    )
    tuned = shm_safe(tuned, batch_bytes=fetch.batch_bytes, local_world_size=1, shm_path="/dev/shm")
    tune_start = time.perf_counter()
    picked = autotuned(data, tuned, budget.cpus, args)
    tune_seconds = time.perf_counter() - tune_start
    configs = configs_to_run(data, tuned, picked, args.sweep, args.sweep_nice)
    # Interleave repeats so that background load hits every config alike; report the median run.
    pairs = latency_configs(tuned)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configs}
    loader_rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    model_rates: list[float] = []
    latencies: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in pairs}
    # The bound is measured again every round, next to the runs it judges: on a shared host the CPU
    # time per sample drifts (it was measured 430-860 us for the same JPEG fetch on different hours).
    bounds: list[dict[str, float]] = []
    for _ in range(args.repeat):
        bounds.append(measure_bound(data, args, budget.cpus))
        for name, dataset, settings in configs:
            run = train(dataset, settings, args)
            run["fraction_of_bound"] = run["samples_per_second"] / bounds[-1]["bound_samples_per_second"]
            run["fraction_of_busy_bound"] = (
                run["samples_per_second"] / bounds[-1]["busy_bound_samples_per_second"]
            )
            if "cpu_seconds_per_sample" in run:
                run["cpu_vs_serial"] = run["cpu_seconds_per_sample"] / serial_cpu(bounds[-1])
            runs[name].append(run)
        for name, dataset, settings in configs:
            loader_rates[name].append(loader_only(dataset, settings, args))
        model_rates.append(model_only(data, args))
        for name, settings, one_iterator in pairs:
            latencies[name].append(epoch_two_first_batch(data, settings, args, one_iterator=one_iterator))
    model_rate = statistics.median(model_rates)
    rows: list[dict[str, Any]] = []
    for name, _, settings in configs:
        median = median_by(runs[name], "samples_per_second")
        spread = sorted(round(r["samples_per_second"], 1) for r in runs[name])
        loader_rate = statistics.median(loader_rates[name])
        rows.append(
            {
                "name": name,
                "settings": asdict(settings),
                **median,
                "runs_samples_per_second": spread,
                # Each run against its own round's bound; the median of those.
                "fraction_of_bound": statistics.median(r["fraction_of_bound"] for r in runs[name]),
                "fraction_of_busy_bound": statistics.median(r["fraction_of_busy_bound"] for r in runs[name]),
                "loader_only_samples_per_second": loader_rate,
                "model_only_samples_per_second": model_rate,
                "headroom": loader_rate / model_rate if model_rate else 0.0,
            }
        )
    base = rows[0]["samples_per_second"]
    for row in rows:
        row["speedup_vs_naive"] = row["samples_per_second"] / base
    epoch2 = [
        {
            "name": name,
            "settings": asdict(settings),
            **median_by(latencies[name], "epoch2_first_batch_in_steps"),
            "runs_in_steps": sorted(round(r["epoch2_first_batch_in_steps"], 2) for r in latencies[name]),
        }
        for name, settings, _ in pairs
    ]
    return {
        "machine": {
            "cpus": budget.cpus,
            "cpu_source": budget.source,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "bound": median_by(bounds, "bound_samples_per_second")
        | {"runs_samples_per_second": sorted(round(b["bound_samples_per_second"], 1) for b in bounds)},
        "probe": {"fetch_seconds": fetch.fetch_seconds, "handoff_seconds": fetch.handoff_seconds},
        "params": vars(args) | {"json": None},
        "autotune_seconds": tune_seconds,
        "rows": rows,
        "model_only_runs_samples_per_second": sorted(round(r, 1) for r in model_rates),
        "epoch2": epoch2,
        "notes": NOTES,
    }


def format_rows(result: dict[str, Any]) -> str:
    header = f"{'config':<16} {'workers':>7} {'prefetch':>8} {'persist':>7} {'samples/s':>10}"
    lines = [
        f"{header} {'vs naive':>8} {'of bound':>8} {'of busy':>7} {'data wait':>9} {'loader/s':>9} {'H':>5}"
    ]
    for r in result["rows"]:
        s = r["settings"]
        lines.append(
            f"{r['name']:<16} {s['num_workers']:>7} {s['prefetch_factor']:>8} {s['persistent_workers']!s:>7} "
            f"{r['samples_per_second']:>10.1f} {r['speedup_vs_naive']:>7.2f}x {r['fraction_of_bound']:>8.2f} "
            f"{r['fraction_of_busy_bound']:>7.2f} {r['data_wait_ratio']:>9.1%} "
            f"{r['loader_only_samples_per_second']:>9.1f} {r['headroom']:>5.2f}"
            f"  runs: {r['runs_samples_per_second']}"
        )
    lines.append(
        f"model-only {result['rows'][0]['model_only_samples_per_second']:.1f} samples/s "
        f"(runs: {result['model_only_runs_samples_per_second']}); H = loader/s / model-only "
        "(goal 2: >= 1.2, on the GPU; the CPU H is not the GPU's H, see notes)"
    )
    head = f"{'epoch 2':<16} {'workers':>7} {'persist':>7}"
    lines.append(f"{head} {'first batch':>12} {'step':>9} {'in steps':>8}")
    for e in result["epoch2"]:
        s = e["settings"]
        lines.append(
            f"{e['name']:<16} {s['num_workers']:>7} {s['persistent_workers']!s:>7} "
            f"{e['epoch2_first_batch_seconds'] * 1e3:>9.1f} ms "
            f"{e['epoch1_median_step_seconds'] * 1e3:>6.1f} ms "
            f"{e['epoch2_first_batch_in_steps']:>8.2f}  runs: {e['runs_in_steps']}"
        )
    lines.append("epoch 2 first batch in steps: goal 3, <= 1 (the trainer runs one iterator)")
    if all("cpu_vs_serial" in r for r in result["rows"]):
        lines += format_cpu(result)
    return "\n".join(lines)


def format_cpu(result: dict[str, Any]) -> list[str]:
    """Where each config's median run spent the cores: of bound = (1 - idle - steal) / (CPU x serial)."""
    bound = result["bound"]
    serial = (bound["fetch_cpu_seconds_per_sample"], bound["step_cpu_seconds_per_sample"])
    head = f"{'cpu (median run)':<16} {'idle':>6} {'steal':>6} {'main us':>8} {'workers us':>10}"
    lines = [f"{head} {'other us':>8} {'CPU x serial':>12} {'explains':>8}"]
    for r in result["rows"]:
        explained = (1 - r["idle_share"] - r["steal_share"]) / r["cpu_vs_serial"]
        lines.append(
            f"{r['name']:<16} {r['idle_share']:>6.1%} {r['steal_share']:>6.1%} "
            f"{r['main_cpu_seconds_per_sample'] * 1e6:>8.0f} "
            f"{r['descendants_cpu_seconds_per_sample'] * 1e6:>10.0f} "
            f"{r['other_cpu_seconds_per_sample'] * 1e6:>8.0f} {r['cpu_vs_serial']:>11.2f}x {explained:>8.2f}"
        )
    lines.append(
        f"serial: fetch {serial[0] * 1e6:.0f} us + step {serial[1] * 1e6:.0f} us per sample in-process; "
        "main = the training process, workers = its descendants, other = the rest of the machine; "
        "explains = (1 - idle - steal) / (CPU x serial), the run's fraction of the bound when nothing "
        "else runs"
    )
    return lines


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="synthetic", choices=["synthetic", "jpeg"])
    p.add_argument("--sample-cost-us", type=int, default=500, help="CPU microseconds per synthetic sample")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--dataset-size", type=int, default=4096)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--autotune-batches", type=int, default=20)
    p.add_argument("--autotune-seconds", type=float, default=60.0)
    p.add_argument("--sweep", type=_ints, default=[], help="extra rows at these worker counts, e.g. 3,4")
    p.add_argument(
        "--sweep-nice",
        type=_ints,
        default=[],
        help="the tuned and sweep worker counts again at these worker niceness (less rows already run)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per config; the median is reported")
    p.add_argument(
        "--headroom-batches", type=int, default=30, help="timed batches for loader-only and model-only"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def busy_bound_line(bound: dict[str, float]) -> str:
    fetch, step = (bound[f"busy_{k}_cpu_seconds_per_sample"] for k in ("fetch", "step"))
    dearer = (fetch / bound["fetch_cpu_seconds_per_sample"], step / bound["step_cpu_seconds_per_sample"])
    return (
        f"busy bound {bound['busy_bound_samples_per_second']:.1f} samples/s = cpus / (fetch "
        f"{fetch * 1e6:.0f} us + step {step * 1e6:.0f} us CPU per sample with the same work on every CPU "
        f"at once: {dearer[0]:.2f}x and {dearer[1]:.2f}x the in-process); of busy = samples/s / this: "
        "the fraction of what the cores give when all are busy"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.steps_per_epoch * args.batch_size > args.dataset_size:
        raise SystemExit("--steps-per-epoch x --batch-size must not exceed --dataset-size")
    result = run(args)
    print(format_rows(result))
    bound, machine = result["bound"], result["machine"]
    start, end = (" ".join(f"{x:.2f}" for x in machine[f"load_average_{k}"]) for k in ("start", "end"))
    print(
        f"cpus={machine['cpus']} ({machine['cpu_source']}), load average {start} at start, {end} at end, "
        "autotune took "
        f"{result['autotune_seconds']:.1f} s; bound {bound['bound_samples_per_second']:.1f} samples/s "
        f"= cpus / (fetch {bound['fetch_cpu_seconds_per_sample'] * 1e6:.0f} us + step "
        f"{bound['step_cpu_seconds_per_sample'] * 1e6:.0f} us CPU per sample; median of the rounds', "
        f"each run judged against its own round's: {bound['runs_samples_per_second']})"
    )
    print(busy_bound_line(bound))
    for note in result["notes"]:
        print(f"note: {note}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
