"""The training run: workload, tuned loader, DDP loop with metrics, checkpoints and preemption."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchjob_core import constants

from torchjob_trainer import checkpoint, distributed, logs, summary, termination
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import autotune, cpu, probe
from torchjob_trainer.data import workers as loader_workers
from torchjob_trainer.data.datasets import build_dataset
from torchjob_trainer.data.loader import (
    LoaderSettings,
    RunSampler,
    make_loader,
    resolve_settings,
    shm_safe,
)
from torchjob_trainer.metrics import RankLabels, TrainerMetrics
from torchjob_trainer.models import build_model
from torchjob_trainer.preemption import EXIT_PREEMPTED, Preemption
from torchjob_trainer.profiling import StepProfiler
from torchjob_trainer.startup import StartupPhases, prefetch_imports
from torchjob_trainer.stepstats import StepStats
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
    step: autotune.StepFn = autotune.no_step,
) -> LoaderSettings:
    cuda = device.type == "cuda"
    budget = cpu.cpu_budget(config.cpu_limit)
    fetch = probe.probe_fetch(
        dataset,
        config.batch_size,
        handoff=config.num_workers is None,
        sharing=config.loader_sharing,
        use_slots=config.loader_slots,
    )
    settings = resolve_settings(
        config, local_world_size=env.local_world_size, cuda=cuda, budget=budget, probe=fetch
    )
    log.info("one batch is %d bytes", fetch.batch_bytes)

    def safe(s: LoaderSettings) -> LoaderSettings:
        return shm_safe(
            s, batch_bytes=fetch.batch_bytes, local_world_size=env.local_world_size, shm_path=config.shm_path
        )

    settings = safe(settings)
    if not config.autotune:
        return settings
    per_process = budget.cpus / max(1, env.local_world_size)
    options = list(dict.fromkeys(safe(c) for c in autotune.candidates(settings, per_process)))
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, seed=config.seed
    )

    coll = autotune.Collectives(
        broadcast=lambda value: _broadcast(value, env, device), agree=lambda flag: _agree_stop(flag, device)
    )

    def measure(s: LoaderSettings) -> autotune.Measurement:
        return autotune.measure_candidate(
            dataset,
            sampler,
            s,
            step,
            batches=config.autotune_batches,
            batch_size=config.batch_size,
            same_count=coll.broadcast,
        )

    log.info(
        "autotune: %d candidates (worker counts %s), each timed for %d batches and at least %.0f s after its "
        "start-up batches, with the training step running, within --autotune-seconds %.0f",
        len(options),
        [o.num_workers for o in options],
        config.autotune_batches,
        autotune.WINDOW_SECONDS,
        config.autotune_seconds,
    )
    # Every rank measures under the same contention; rank 0's list and picks are broadcast.
    chosen, _ = autotune.autotune(
        coll.broadcast(options),
        measure,
        max_seconds=config.autotune_seconds,
        coll=coll,
        refine=lambda best: [safe(c) for c in autotune.refinements(best)],
    )
    log.info("autotune chose %s", chosen.describe())
    return chosen


def _agree_stop(local: bool, device: torch.device) -> bool:
    """True on every rank if any rank was asked to stop (one tiny all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run(config: TrainerConfig, *, forked: bool = False) -> int:
    """Train; returns the exit code (0 done, 143 preempted after checkpoint, 73 checkpoint write failed).
    `forked`: this process was forked after the imports (forkstart), which its start-up line says."""
    startup = StartupPhases.since_process_start(forked=forked)
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
    # Started before the rendezvous: torch._dynamo imports while init_process_group waits for peers.
    prefetch = prefetch_imports(config.prefetch_imports)
    preemption = Preemption(config.preemption_grace_seconds)
    preemption.install()
    torch.manual_seed(config.seed)
    device = distributed.pick_device(env.local_rank, env.local_world_size, config.cuda_memory_fraction)
    startup.mark("device")  # logs, signal handler, seed and device (CUDA initialises here)
    distributed.init(env, device, config.backend)
    startup.mark("rendezvous")
    if prefetch is not None:
        # Joined before the workload and optimizer are built: no two threads import one torch module at once.
        prefetch.wait()
        startup.mark("import_wait")
    try:
        return Trainer(config, env, device, preemption, startup).train()
    except checkpoint.CheckpointWriteError as exc:
        return checkpoint_failed(exc, config.termination_log)
    except PeerCheckpointError:
        return peer_stopped(env, config.termination_log)
    finally:
        preemption.cancel()
        # Before anything else: loader workers ignore SIGTERM, and any still alive would hang the exit.
        loader_workers.end_workers()
        distributed.teardown()  # frees a failed step's Trainer (its DDP reducer) before leaving the group


class PeerCheckpointError(Exception):
    """Rank 0 could not write the checkpoint; this rank stops with it."""


def checkpoint_failed(error: checkpoint.CheckpointWriteError, termination_log: str | None) -> int:
    """Fail loudly (rank 0): one line naming the directory and the cause, the termination message the
    operator turns into `CheckpointWriteFailed`, and the distinct exit code. Going on would train steps
    that no checkpoint can keep."""
    log.error("%s", error)
    termination.write(termination_log, str(error))
    return constants.EXIT_CHECKPOINT_WRITE_FAILED


def peer_stopped(env: distributed.DistEnv, termination_log: str | None) -> int:
    """Another rank's share of the failure: same exit code, no second error line. The first process of
    another pod leaves a message there too, as that pod may be the one the operator reports."""
    log.info("stopping: rank 0 could not write a checkpoint (its log says why)")
    if env.local_rank == 0:
        termination.write(termination_log, "rank 0 could not write a checkpoint; its pod's log says why.")
    return constants.EXIT_CHECKPOINT_WRITE_FAILED


class Trainer:
    """One rank's training run: set up and resumed at construction, then `train()`.

    `train_step` is one optimizer step on one batch, callable on its own once DDP is set up (autotune can
    measure the loader with it).
    Start-up phases after the rendezvous are marked on `startup` and logged after the first step.
    """

    def __init__(
        self,
        config: TrainerConfig,
        env: distributed.DistEnv,
        device: torch.device,
        preemption: Preemption,
        startup: StartupPhases | None = None,
    ) -> None:
        self.config, self.env, self.device, self.preemption = config, env, device, preemption
        startup = startup or StartupPhases(time.monotonic())
        self.startup: StartupPhases | None = startup
        labels = RankLabels(config.job_name, env.rank, env.local_rank, env.node_rank)
        self.metrics = TrainerMetrics(labels, cuda=device.type == "cuda")
        self.metrics.serve(config.metrics_port, env.local_rank)
        startup.mark("metrics")
        self.workload = build_workload(config)
        startup.mark("workload")
        self.model = self.workload.model.to(device)
        self.optimizer = build_optimizer(replace(self.workload, model=self.model))
        startup.mark("optimizer")  # the first optimizer imports torch._dynamo unless prefetched
        self.checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        position = self._resume()
        startup.mark("resume")
        self.net = self._wrap_ddp()
        startup.mark("ddp")
        # train_step works from here on; until the loader is chosen, batches are not pinned.
        self.non_blocking = False
        # Autotune's steps measure; they must not train (snapshot and restore, only when it runs).
        with autotune.preserving(self.net, self.optimizer, enabled=config.autotune):
            self.settings = tune_loader(config, self.workload.dataset, env, device, self._tuning_step)
        self.non_blocking = self.settings.pin_memory  # copies from pinned batches overlap the step
        startup.mark("loader")
        self.sampler, self.loader = self._build_loader()
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self.steps_per_epoch * config.epochs
        self.metrics.final_step.set(self.total_steps)
        self.metrics.world_size.set(env.world_size)
        self.epoch, self.step_in_epoch, self.global_step = (
            position.epoch,
            position.step_in_epoch,
            position.global_step,
        )
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.global_step and self.global_step >= self.total_steps:
            log.info(
                "nothing left to train: resumed at global step %d of %d; an empty checkpoint dir starts over",
                self.global_step,
                self.total_steps,
            )
        self.profiler = StepProfiler(config.profile_range(), Path(config.profile_dir), env.rank)
        self.stats = StepStats()
        self.wall_start = time.perf_counter()

    # -- set-up and resume ----------------------------------------------------------------------------

    def _resume(self) -> checkpoint.Position:
        """Loads the newest checkpoint any node holds into model and optimizer; where training stands."""
        payload = find_resume(self.checkpoint_dir, self.env, self.device)
        if payload is None:
            return checkpoint.Position(0, 0, 0)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        position = checkpoint.position_of(
            payload, world_size=self.env.world_size, batch_size=self.config.batch_size
        )
        log.info(
            "resumed at epoch %d, step %d of the epoch, global step %d",
            position.epoch,
            position.step_in_epoch,
            position.global_step,
        )
        return position

    def _wrap_ddp(self) -> nn.Module:
        if not (dist.is_available() and dist.is_initialized()):
            return self.model
        cuda = self.device.type == "cuda"
        return DistributedDataParallel(self.model, device_ids=[self.device.index] if cuda else None)

    def _build_loader(self) -> tuple[RunSampler, DataLoader[Any]]:
        config, env, dataset, settings = self.config, self.env, self.workload.dataset, self.settings
        ranks_share: DistributedSampler[Any] = DistributedSampler(
            dataset,
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        sampler = RunSampler(ranks_share, batch_size=config.batch_size, epochs=config.epochs)
        loader = make_loader(dataset, sampler, config.batch_size, settings, seed=config.seed)
        log.info("DataLoader: %s batch_size=%d", settings.describe(), config.batch_size)
        self.metrics.workers.set(settings.num_workers)
        self.metrics.prefetch.set(settings.prefetch_factor)
        return sampler, loader

    def _steps_per_epoch(self) -> int:
        if self.config.steps_per_epoch:
            self.sampler.cap_steps(self.config.steps_per_epoch)
        steps = self.sampler.steps_per_epoch
        if steps == 0:
            raise ValueError(
                f"--batch-size (TORCHJOB_BATCH_SIZE): {self.config.batch_size} x world size "
                f"{self.env.world_size} exceeds the dataset's {len(self.workload.dataset)} samples"  # type: ignore[arg-type]
            )
        return steps

    # -- one step -------------------------------------------------------------------------------------

    def _tuning_step(self, batch: Any) -> None:
        """One real training step: what autotune measures each loader config against."""
        self.train_step(*batch)

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> float:
        """One optimizer step on one batch; returns its loss (reading it syncs the device)."""
        inputs = inputs.to(self.device, non_blocking=self.non_blocking)
        target = target.to(self.device, non_blocking=self.non_blocking)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.workload.loss(self.net(inputs), target)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return float(loss.item())

    def _next_step(self, batches: Iterator[Any]) -> bool:
        """Loads a batch and trains on it, timing both; False when the loader ran out."""
        t0 = time.perf_counter()
        try:
            inputs, target = next(batches)
        except StopIteration:
            return False
        t1 = time.perf_counter()
        samples = int(target.shape[0])
        loss = self.train_step(inputs, target)
        t2 = time.perf_counter()
        # Drop this batch now: a worker's batch pins shared memory until its last reference goes.
        del inputs, target
        self.step_in_epoch += 1
        self.global_step += 1
        self.metrics.observe_step(samples=samples, step_seconds=t2 - t0, wait_seconds=t1 - t0, loss=loss)
        self.metrics.step.set(self.global_step)
        self.stats.record(samples=samples, seconds=t2 - t0, wait=t1 - t0, loss=loss)
        if self.startup is not None:  # the first step: start-up ends here
            self.startup.mark("first_step")
            log.info("%s", self.startup.line())
            self.metrics.observe_startup(self.startup.phases, self.startup.total())
            self.startup = None
        if self.global_step % self.config.log_every == 0 or self.step_in_epoch == self.steps_per_epoch:
            self._report_window()
        return True

    def _report_window(self) -> None:
        window = self.stats.take_window()
        rate, ratio = window.samples_per_second, window.wait_ratio
        self.metrics.observe_window(samples_per_second=rate, data_wait_ratio=ratio)
        if self.env.rank != 0:
            return
        loss = self.stats.loss
        fields = {
            "step": self.global_step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "epochs": self.config.epochs,
            "loss": round(loss, 6) if math.isfinite(loss) else None,
            "samples_per_second": round(rate * self.env.world_size, 2),
            "step_seconds": round(window.mean_step_seconds, 6),
            "data_wait_ratio": round(ratio, 4),
            "elapsed_seconds": round(time.perf_counter() - self.wall_start, 3),
        }
        log.info("%s", logs.progress_line(fields))

    # -- the run --------------------------------------------------------------------------------------

    def train(self) -> int:
        """Trains to the last epoch or a preemption; the exit code (0, or 143 after the checkpoint)."""
        epochs, every = self.config.epochs, self.config.checkpoint_every
        preempted = False
        self.net.train()
        # One iterator for every epoch left (RunSampler): the next epoch's batches are prefetched while
        # this one's last steps train.
        self.sampler.start_at(self.epoch, self.step_in_epoch)
        batches = iter(self.loader)
        while self.epoch < epochs:
            if self._train_epoch(batches):
                preempted = True
                break
            if not every or self.epoch + 1 == epochs:
                self._save(f"end of epoch {self.epoch}")
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.profiler.stop()
        if preempted:
            self._save_on_preemption()
        self._report_summary("preempted" if preempted else "completed")
        return EXIT_PREEMPTED if preempted else 0

    def _train_epoch(self, batches: Iterator[Any]) -> bool:
        """Trains the rest of the current epoch; True if the ranks agreed to stop (preemption)."""
        every = self.config.checkpoint_every
        self.metrics.epoch.set(self.epoch)
        while self.step_in_epoch < self.steps_per_epoch:
            self.profiler.step(self.global_step)
            if not self._next_step(batches):
                break
            if _agree_stop(self.preemption.requested, self.device):
                self.preemption.request()
                return True
            if every and self.global_step % every == 0:
                self._save(f"every {every} steps")
        return False

    def _save(self, reason: str, *, agree: bool = True) -> None:
        """Rank 0 writes; with `agree`, every rank then learns whether that failed and stops with it (one
        exit code for the gang, rather than peers failing later on a collective rank 0 left)."""
        if self.checkpoint_dir is None:
            return
        error = self._write_checkpoint(self.checkpoint_dir, reason) if self.env.rank == 0 else None
        if agree and _agree_stop(error is not None, self.device):
            raise error or PeerCheckpointError()
        if error is not None:
            raise error

    def _write_checkpoint(self, directory: Path, reason: str) -> checkpoint.CheckpointWriteError | None:
        started = time.perf_counter()
        config, world_size = self.config, self.env.world_size
        try:
            path = checkpoint.save(
                directory,
                model_state=self.model.state_dict(),
                optimizer_state=self.optimizer.state_dict(),
                position=checkpoint.Position(self.epoch, self.step_in_epoch, self.global_step),
                extra={"job": config.job_name, "world_size": world_size, "batch_size": config.batch_size},
                keep=config.keep_checkpoints,
            )
        except checkpoint.CheckpointWriteError as exc:
            return exc
        took = time.perf_counter() - started
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.inc(took)
        log.info("checkpoint %s (%s) written in %.3f s", path, reason, took)
        return None

    def _save_on_preemption(self) -> None:
        # Ranks judge the time left on their own clocks, so they may not all get here: no collective.
        if self.preemption.remaining() > 0:
            self._save("preemption", agree=False)
        else:
            log.error("no time left in --preemption-grace-seconds to checkpoint; the last checkpoint stays")

    def _report_summary(self, outcome: str) -> None:
        # Every rank takes part in the gather; rank 0 reports.
        per_rank = summary.gather(self.stats.rank_totals(), self.device)
        if self.env.rank != 0:
            return
        settings = self.settings
        summary.report(
            summary.build(
                per_rank,
                job=self.config.job_name,
                outcome=outcome,
                global_step=self.global_step,
                total_steps=self.total_steps,
                wall_seconds=round(time.perf_counter() - self.wall_start, 3),
                dataloader={
                    "num_workers": settings.num_workers,
                    "prefetch_factor": settings.prefetch_factor,
                    "pin_memory": settings.pin_memory,
                    "persistent_workers": settings.persistent_workers,
                    "worker_nice": settings.worker_nice,
                },
            ),
            self.config.summary_file,
        )
