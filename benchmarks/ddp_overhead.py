"""DDP overhead at one rank: DistributedDataParallel throughput / plain single-process training.

One process trains the same model on the same in-memory batches (no loader: the wrapper alone is
measured) twice: plain, and wrapped in DDP in a world of one (gloo on CPU, NCCL on CUDA). At one rank
DDP still registers gradient hooks, copies gradients into its buckets and runs an all-reduce over a
group of one, which is the overhead measured here. Short blocks of steps alternate (plain, DDP, plain,
...) so that background load hits both alike; the median of the `--rounds` block ratios is the result,
and the same ratio by CPU time per step (insensitive to other tenants of the CPU) is printed beside it.
performance.md goal 6: >= 0.95 (PyTorch's own DDP benchmark: 0.970).

    OMP_NUM_THREADS=1 python benchmarks/ddp_overhead.py --model cnn
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchjob_trainer import distributed
from torchjob_trainer.models import build_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_world_of_one(device: torch.device) -> str:
    backend = "nccl" if device.type == "cuda" else "gloo"
    device_id = device if device.type == "cuda" else None
    url = f"tcp://127.0.0.1:{free_port()}"
    dist.init_process_group(backend, init_method=url, world_size=1, rank=0, device_id=device_id)
    return backend


Batch = tuple[torch.Tensor, torch.Tensor]


def make_batches(
    batch_size: int, shape: tuple[int, ...], device: torch.device, count: int = 8, seed: int = 0
) -> list[Batch]:
    """`count` random in-memory batches (images of `shape`, 10 classes): no loader in the measurement."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn((batch_size, *shape), generator=gen).to(device),
            torch.randint(0, 10, (batch_size,), generator=gen).to(device),
        )
        for _ in range(count)
    ]


def make_step(net: nn.Module) -> Callable[[Batch], None]:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        loss.item()  # syncs a device

    return step


def timed_block(step: Callable[[Batch], None], batches: list[Batch], steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `steps` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(batches[i % len(batches)])
    return time.perf_counter() - wall, time.process_time() - cpu


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate short blocks of plain and DDP steps, so that load changes hit both alike."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.cpu else torch.device("cpu")
    backend = init_world_of_one(device)
    try:
        wall_ratios, cpu_ratios, totals = alternate_blocks(args, device)
    finally:
        distributed.teardown()  # after alternate_blocks returned: its DDP is gone before the group
    samples = args.rounds * args.block * args.batch_size
    return {
        "device": str(device),
        "backend": backend,
        "params": vars(args) | {"json": None},
        "load_average": os.getloadavg(),
        "plain_samples_per_second": samples / totals["plain"][0],
        "ddp_samples_per_second": samples / totals["ddp"][0],
        "ratio_median": statistics.median(wall_ratios),
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "ratio_quartiles": statistics.quantiles(wall_ratios, n=4) if len(wall_ratios) > 1 else wall_ratios,
    }


def alternate_blocks(
    args: argparse.Namespace, device: torch.device
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Per round, the DDP / plain throughput and CPU ratios; the wall and CPU seconds of each in total."""
    shape = (3, args.image_size, args.image_size)
    batches = make_batches(args.batch_size, shape, device)
    torch.manual_seed(0)
    plain = make_step(build_model(args.model, shape, 10).to(device))
    torch.manual_seed(0)
    ids = [0] if device.type == "cuda" else None
    ddp = make_step(DistributedDataParallel(build_model(args.model, shape, 10).to(device), device_ids=ids))
    for step in (plain, ddp):
        timed_block(step, batches, 3)  # warm-up: allocations, DDP's bucket rebuild after iteration 1
    wall_ratios, cpu_ratios, totals = [], [], {"plain": [0.0, 0.0], "ddp": [0.0, 0.0]}
    for _ in range(args.rounds):
        p, d = timed_block(plain, batches, args.block), timed_block(ddp, batches, args.block)
        wall_ratios.append(p[0] / d[0])  # throughput ratio DDP / plain = plain time / DDP time
        cpu_ratios.append(p[1] / d[1] if d[1] > 0 else 1.0)
        for name, (w, c) in (("plain", p), ("ddp", d)):
            totals[name][0] += w
            totals[name][1] += c
    return wall_ratios, cpu_ratios, totals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn", "resnet18"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--block", type=int, default=5, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=40, help="alternating plain/DDP block pairs; median ratio")
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is visible")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    where = f"{result['backend']}, {result['device']}, {args.model}, batch {args.batch_size}"
    quartiles = ", ".join(f"{q:.3f}" for q in result["ratio_quartiles"])
    print(
        f"DDP / plain throughput at 1 rank ({where}): median {result['ratio_median']:.3f} "
        f"(quartiles {quartiles})"
    )
    print(f"  by CPU time per step: {result['cpu_ratio_median']:.3f}")
    print(
        f"  plain {result['plain_samples_per_second']:.1f} samples/s, "
        f"DDP {result['ddp_samples_per_second']:.1f}"
    )
    print(f"  load average {' '.join(f'{x:.2f}' for x in result['load_average'])}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
