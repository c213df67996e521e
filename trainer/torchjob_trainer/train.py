"""The training run: workload, tuned loader, DDP loop with metrics, checkpoints and preemption."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from torchjob_trainer import checkpoint, distributed, logs, summary
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import autotune, cpu
from torchjob_trainer.data.datasets import build_dataset
from torchjob_trainer.data.loader import (
    LoaderSettings,
    ResumableDistributedSampler,
    make_loader,
    measure_batch_bytes,
    resolve_settings,
    shm_safe,
)
from torchjob_trainer.metrics import RankLabels, TrainerMetrics
from torchjob_trainer.models import build_model
from torchjob_trainer.preemption import EXIT_PREEMPTED, Preemption
from torchjob_trainer.profiling import StepProfiler
from torchjob_trainer.userapi import Workload, as_workload, build_optimizer, load_entrypoint

log = logging.getLogger(__name__)


def build_workload(config: TrainerConfig) -> Workload:
    if config.user_entrypoint:
        return as_workload(load_entrypoint(config.user_entrypoint)(config))
    dataset = build_dataset(config)
    sample = dataset[0][0]
    model = build_model(config.model, tuple(sample.shape), config.num_classes)
    lr = config.lr

    def sgd(params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    return Workload(model, dataset, nn.CrossEntropyLoss(), sgd)


def _broadcast(obj: Any, env: distributed.DistEnv, device: torch.device) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj if env.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def find_resume(
    directory: Path | None, env: distributed.DistEnv, device: torch.device
) -> dict[str, Any] | None:
    """The newest valid checkpoint any node can see, sent to every rank.

    Ranks are reassigned at every rendezvous, so the last writer (rank 0 then) may now sit on another
    node. Local rank 0 of each node reads its own mount; one all-gather finds the newest, and the rank
    holding it broadcasts it. With shared storage every node finds the same file and rank 0 sends it.
    """
    local = checkpoint.load_latest(directory) if directory is not None and env.local_rank == 0 else None
    if not (dist.is_available() and dist.is_initialized()):
        return local
    mine = torch.tensor([local["global_step"] if local else -1], dtype=torch.int64, device=device)
    steps = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(steps, mine)
    values = [int(s.item()) for s in steps]
    best = max(values)
    if best < 0:
        return None
    src = values.index(best)  # the lowest rank holding the newest step
    box = [local if env.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=device if device.type == "cuda" else None)
    if env.rank == 0 and src != 0:
        log.info("checkpoint at global step %d came from rank %d's node", best, src)
    return box[0]


def tune_loader(
    config: TrainerConfig,
    dataset: Dataset[Any],
    env: distributed.DistEnv,
    device: torch.device,
) -> LoaderSettings:
    cuda = device.type == "cuda"
    budget = cpu.cpu_budget(config.cpu_limit)
    settings = resolve_settings(config, local_world_size=env.local_world_size, cuda=cuda, budget=budget)
    batch_bytes = measure_batch_bytes(dataset, config.batch_size)
    log.info("one batch is %d bytes", batch_bytes)

    def safe(s: LoaderSettings) -> LoaderSettings:
        return shm_safe(
            s, batch_bytes=batch_bytes, local_world_size=env.local_world_size, shm_path=config.shm_path
        )

    settings = safe(settings)
    if not config.autotune:
        return settings
    options = list(dict.fromkeys(safe(c) for c in autotune.candidates(settings, budget.cpus)))
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, seed=config.seed
    )

    def measure(s: LoaderSettings) -> autotune.Measurement:
        loader = make_loader(dataset, sampler, config.batch_size, replace(s, persistent_workers=False))
        rate, first = autotune.time_batches(loader, config.autotune_batches, config.batch_size)
        del loader
        return autotune.Measurement(s, rate, first)

    best, _ = autotune.autotune(options, measure)
    # Every rank measured under the same contention; rank 0 decides so that all ranks load alike.
    chosen: LoaderSettings = _broadcast(best, env, device)
    log.info("autotune chose %s", chosen.describe())
    return chosen


@dataclass
class Window:
    """Progress since the last progress line."""

    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    wait: float = 0.0


def _agree_stop(local: bool, device: torch.device) -> bool:
    """True on every rank if any rank was asked to stop (one tiny all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run(config: TrainerConfig) -> int:
    """Train; returns the exit code (0 done, 143 preempted after checkpoint)."""
    env = distributed.DistEnv.from_env()
    logs.setup(
        config.log_level,
        namespace=config.namespace,
        job=config.job_name,
        rank=env.rank,
        world=env.world_size,
        local_rank=env.local_rank,
        node_rank=env.node_rank,
    )
    preemption = Preemption(config.preemption_grace_seconds)
    preemption.install()
    torch.manual_seed(config.seed)
    device = distributed.pick_device(env.local_rank)
    distributed.init(env, device, config.backend)
    try:
        return _train(config, env, device, preemption)
    finally:
        preemption.cancel()
        distributed.teardown()


def _train(
    config: TrainerConfig, env: distributed.DistEnv, device: torch.device, preemption: Preemption
) -> int:
    cuda = device.type == "cuda"
    metrics = TrainerMetrics(RankLabels(config.job_name, env.rank, env.local_rank, env.node_rank), cuda=cuda)
    metrics.serve(config.metrics_port, env.local_rank)

    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    workload = build_workload(config)
    phase("workload")
    model = workload.model.to(device)
    optimizer = build_optimizer(replace(workload, model=model))
    phase("optimizer")  # the first optimizer imports torch._dynamo: seconds on a busy CPU
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    payload = find_resume(ckpt_dir, env, device)
    phase("resume")
    position = checkpoint.Position(0, 0, 0)
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        position = checkpoint.position_of(payload, world_size=env.world_size, batch_size=config.batch_size)
        log.info(
            "resumed at epoch %d, step %d of the epoch, global step %d",
            position.epoch,
            position.step_in_epoch,
            position.global_step,
        )
    net: nn.Module = model
    if dist.is_available() and dist.is_initialized():
        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    phase("ddp")

    dataset = workload.dataset
    settings = tune_loader(config, dataset, env, device)
    phase("loader")
    log.info("start-up phases (seconds): %s", phases)
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    loader = make_loader(dataset, sampler, config.batch_size, settings, seed=config.seed)
    log.info("DataLoader: %s batch_size=%d", settings.describe(), config.batch_size)
    metrics.workers.set(settings.num_workers)
    metrics.prefetch.set(settings.prefetch_factor)

    steps_per_epoch = len(loader)
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch-size (TORCHJOB_BATCH_SIZE): {config.batch_size} x world size {env.world_size} "
            f"exceeds the dataset's {len(dataset)} samples"  # type: ignore[arg-type]
        )
    total_steps = steps_per_epoch * config.epochs
    epoch, step_in_epoch, global_step = position.epoch, position.step_in_epoch, position.global_step
    if step_in_epoch >= steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0

    profiler = StepProfiler(config.profile_range(), Path(config.profile_dir), env.rank)
    totals = summary.RankTotals()
    window = Window()
    loss_value = float("nan")
    preempted = False
    wall_start = time.perf_counter()

    def save(reason: str) -> None:
        if ckpt_dir is None or env.rank != 0:
            return
        started = time.perf_counter()
        path = checkpoint.save(
            ckpt_dir,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            position=checkpoint.Position(epoch, step_in_epoch, global_step),
            extra={"job": config.job_name, "world_size": env.world_size, "batch_size": config.batch_size},
            keep=config.keep_checkpoints,
        )
        took = time.perf_counter() - started
        metrics.checkpoints.inc()
        metrics.checkpoint_seconds.inc(took)
        log.info("checkpoint %s (%s) written in %.3f s", path, reason, took)

    net.train()
    while epoch < config.epochs and not preempted:
        sampler.set_epoch(epoch)
        sampler.skip_next_epoch_start(step_in_epoch * config.batch_size)
        metrics.epoch.set(epoch)
        batches = iter(loader)
        while step_in_epoch < steps_per_epoch:
            profiler.step(global_step)
            t0 = time.perf_counter()
            try:
                inputs, target = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            inputs = inputs.to(device, non_blocking=settings.pin_memory)
            target = target.to(device, non_blocking=settings.pin_memory)
            optimizer.zero_grad(set_to_none=True)
            loss = workload.loss(net(inputs), target)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_value = float(loss.item())  # syncs the device, so t2 is the true step end
            t2 = time.perf_counter()
            step_in_epoch += 1
            global_step += 1
            n = int(target.shape[0])
            # Drop this batch now: a worker's batch pins shared memory until its last reference goes.
            del inputs, target
            metrics.observe_step(samples=n, step_seconds=t2 - t0, wait_seconds=t1 - t0, loss=loss_value)
            metrics.step.set(global_step)
            totals.samples += n
            totals.steps += 1
            totals.loss = loss_value
            totals.train_seconds += t2 - t0
            totals.data_wait_seconds += t1 - t0
            window.samples += n
            window.steps += 1
            window.seconds += t2 - t0
            window.wait += t1 - t0
            if global_step % config.log_every == 0 or step_in_epoch == steps_per_epoch:
                rate = window.samples / window.seconds if window.seconds > 0 else 0.0
                ratio = window.wait / window.seconds if window.seconds > 0 else 0.0
                metrics.observe_window(samples_per_second=rate, data_wait_ratio=ratio)
                if env.rank == 0:
                    log.info(
                        "%s",
                        logs.progress_line(
                            {
                                "step": global_step,
                                "total_steps": total_steps,
                                "epoch": epoch,
                                "epochs": config.epochs,
                                "loss": round(loss_value, 6) if math.isfinite(loss_value) else None,
                                "samples_per_second": round(rate * env.world_size, 2),
                                "step_seconds": round(window.seconds / max(1, window.steps), 6),
                                "data_wait_ratio": round(ratio, 4),
                                "elapsed_seconds": round(time.perf_counter() - wall_start, 3),
                            }
                        ),
                    )
                window = Window()
            if _agree_stop(preemption.requested, device):
                preemption.request()
                preempted = True
                break
            if config.checkpoint_every and global_step % config.checkpoint_every == 0:
                save(f"every {config.checkpoint_every} steps")
        if preempted:
            break
        if not config.checkpoint_every or epoch + 1 == config.epochs:
            save(f"end of epoch {epoch}")
        epoch, step_in_epoch = epoch + 1, 0
    profiler.stop()

    if preempted:
        if preemption.remaining() > 0:
            save("preemption")
        else:
            log.error("no time left in --preemption-grace-seconds to checkpoint; the last checkpoint stays")
    outcome = "preempted" if preempted else "completed"
    per_rank = summary.gather(totals, device)
    if env.rank == 0:
        summary.report(
            summary.build(
                per_rank,
                job=config.job_name,
                outcome=outcome,
                global_step=global_step,
                total_steps=total_steps,
                wall_seconds=round(time.perf_counter() - wall_start, 3),
                dataloader={
                    "num_workers": settings.num_workers,
                    "prefetch_factor": settings.prefetch_factor,
                    "pin_memory": settings.pin_memory,
                    "persistent_workers": settings.persistent_workers,
                },
            ),
            config.summary_file,
        )
    return EXIT_PREEMPTED if preempted else 0
