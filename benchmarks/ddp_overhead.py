"""DDP overhead at one rank: DistributedDataParallel throughput / plain single-process training.

One process trains the same model on the same in-memory batches (no loader: the wrapper alone is
measured) twice: plain, and wrapped in DDP in a world of one (gloo on CPU, NCCL on CUDA). At one rank
DDP still registers gradient hooks, copies gradients into its buckets and runs an all-reduce over a
group of one, which is the overhead measured here. Runs alternate (plain, DDP, plain, ...) so that
background load hits both alike; the median of `--repeat` ratios is the result. performance.md goal 6:
>= 0.95 (PyTorch's own DDP benchmark: 0.970).

    OMP_NUM_THREADS=1 python benchmarks/ddp_overhead.py --model cnn
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
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


def steps_per_second(net: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        loss.item()  # syncs a device

    for x, y in batches[:3]:
        step(x, y)  # warm-up: allocations, DDP's bucket rebuild after the first iteration
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        step(x, y)
    return steps / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.cpu else torch.device("cpu")
    backend = init_world_of_one(device)
    shape = (3, args.image_size, args.image_size)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn((args.batch_size, *shape), generator=gen).to(device),
            torch.randint(0, 10, (args.batch_size,), generator=gen).to(device),
        )
        for _ in range(8)
    ]
    plain_rates, ddp_rates, ratios = [], [], []
    try:
        for _ in range(args.repeat):
            torch.manual_seed(0)
            plain = build_model(args.model, shape, 10).to(device)
            torch.manual_seed(0)
            wrapped = DistributedDataParallel(
                build_model(args.model, shape, 10).to(device),
                device_ids=[0] if device.type == "cuda" else None,
            )
            p = steps_per_second(plain, batches, args.steps)
            d = steps_per_second(wrapped, batches, args.steps)
            plain_rates.append(p * args.batch_size)
            ddp_rates.append(d * args.batch_size)
            ratios.append(d / p)
    finally:
        dist.destroy_process_group()
    return {
        "device": str(device),
        "backend": backend,
        "params": vars(args) | {"json": None},
        "load_average": os.getloadavg(),
        "plain_samples_per_second": [round(r, 1) for r in plain_rates],
        "ddp_samples_per_second": [round(r, 1) for r in ddp_rates],
        "ratios": [round(r, 4) for r in ratios],
        "ratio_median": statistics.median(ratios),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn", "resnet18"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="timed steps per run")
    p.add_argument(
        "--repeat", type=int, default=5, help="alternating plain/DDP pairs; the median ratio counts"
    )
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is visible")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    where = f"{result['backend']}, {result['device']}, {args.model}, batch {args.batch_size}"
    print(f"DDP / plain at 1 rank ({where}): median {result['ratio_median']:.3f}  ratios {result['ratios']}")
    print(f"  plain samples/s {result['plain_samples_per_second']}")
    print(f"  DDP   samples/s {result['ddp_samples_per_second']}")
    print(f"  load average {' '.join(f'{x:.2f}' for x in result['load_average'])}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
