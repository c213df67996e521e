"""Trainer configuration: one typed dataclass, filled from flags with `TORCHJOB_<FLAG>` env defaults.

Every field is a flag (`--num-workers`) and an env name (`TORCHJOB_NUM_WORKERS`); a flag on the command
line wins over the env, which wins over the field default. Validation errors name the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from torchjob_core import constants

ENV_PREFIX = constants.TRAINER_ENV_PREFIX
MODELS = ("mlp", "cnn", "resnet18")
DATASETS = ("synthetic", "jpeg", "fakedata", "mnist", "cifar10")
BACKENDS = ("auto", "nccl", "gloo")
# How loader workers hand batches over (torch sharing strategies); the first is the default, and
# data/workers.py says why.
LOADER_SHARING = ("file_system", "file_descriptor")
# Loader workers run this much nicer than the training process, which is the pipeline's critical path
# (data/workers.py says why and what it measured); 19 is the nicest Linux allows.
DEFAULT_WORKER_NICE = 10
MAX_NICE = 19


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag and its env name."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _fail(name: str, message: str) -> ConfigError:
    return ConfigError(f"{_flag(name)} ({env_name(name)}): {message}")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_auto_bool(text: str) -> bool | None:
    return None if text.strip().lower() == "auto" else parse_bool(text)


def parse_auto_int(text: str) -> int | None:
    return None if text.strip().lower() == "auto" else int(text)


def parse_optional_str(text: str) -> str | None:
    return text or None


def parse_optional_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _opt(parse: Callable[[str], Any], help_text: str, **extra: Any) -> dict[str, Any]:
    return {"parse": parse, "help": help_text, **extra}


@dataclass(kw_only=True)
class TrainerConfig:
    """What one trainer process does. Field docs are the flags' help text (see docs/trainer.md)."""

    # Workload
    model: str = field(default="mlp", metadata=_opt(str, "model to train", choices=MODELS))
    dataset: str = field(default="synthetic", metadata=_opt(str, "dataset", choices=DATASETS))
    data_dir: str = field(default="/data", metadata=_opt(str, "mounted dataset root (mnist, cifar10)"))
    dataset_size: int = field(default=4096, metadata=_opt(int, "samples in synthetic/fakedata"))
    image_size: int = field(default=32, metadata=_opt(int, "side of synthetic/fakedata images"))
    num_classes: int = field(default=10, metadata=_opt(int, "classes of synthetic/fakedata"))
    sample_cost_us: int = field(
        default=0, metadata=_opt(int, "CPU microseconds spent per synthetic sample (decode stand-in)")
    )
    user_entrypoint: str | None = field(
        default=None, metadata=_opt(parse_optional_str, "module:function returning a Workload")
    )
    # Training
    batch_size: int = field(default=32, metadata=_opt(int, "per-process batch size"))
    epochs: int = field(default=1, metadata=_opt(int, "epochs to train"))
    steps_per_epoch: int = field(default=0, metadata=_opt(int, "cap on steps per epoch; 0 = full epoch"))
    lr: float = field(default=0.01, metadata=_opt(float, "learning rate (SGD)"))
    seed: int = field(default=0, metadata=_opt(int, "random seed"))
    backend: str = field(default="auto", metadata=_opt(str, "process group backend", choices=BACKENDS))
    cuda_memory_fraction: float | None = field(
        default=None,
        metadata=_opt(parse_optional_float, "cap on this process's share of its GPU's memory (0-1]"),
    )
    # DataLoader
    num_workers: int | None = field(default=None, metadata=_opt(parse_auto_int, "auto or an int >= 0"))
    pin_memory: bool | None = field(default=None, metadata=_opt(parse_auto_bool, "auto, true or false"))
    persistent_workers: bool = field(default=True, metadata=_opt(parse_bool, "keep workers across epochs"))
    prefetch_factor: int = field(default=2, metadata=_opt(int, "batches each worker loads ahead"))
    loader_sharing: str = field(
        default=LOADER_SHARING[0],
        metadata=_opt(str, "how workers hand batches over (torch sharing strategy)", choices=LOADER_SHARING),
    )
    loader_slots: bool = field(
        default=True, metadata=_opt(parse_bool, "hand batches over through shared slots each worker reuses")
    )
    loader_worker_nice: int = field(
        default=DEFAULT_WORKER_NICE,
        metadata=_opt(int, "niceness added to loader workers (0-19): the training process runs first"),
    )
    cpu_limit: float | None = field(
        default=None, metadata=_opt(parse_optional_float, "CPU limit when no cgroup quota is readable")
    )
    shm_path: str = field(default="/dev/shm", metadata=_opt(str, "shared-memory mount to size against"))
    autotune: bool = field(default=False, metadata=_opt(parse_bool, "measure loader configs, pick fastest"))
    autotune_batches: int = field(default=20, metadata=_opt(int, "batches measured per autotune candidate"))
    autotune_seconds: float = field(
        default=constants.DEFAULT_AUTOTUNE_SECONDS,
        metadata=_opt(float, "autotune's time budget (s); candidates left then are skipped"),
    )
    # Observability
    metrics_port: int = field(
        default=constants.DEFAULT_METRICS_PORT,
        metadata=_opt(int, "base port; rank serves base+LOCAL_RANK; 0 off"),
    )
    job_name: str = field(default="local", metadata=_opt(str, "job name (metric label, log prefix)"))
    namespace: str = field(default="default", metadata=_opt(str, "namespace (log prefix)"))
    log_every: int = field(default=10, metadata=_opt(int, "steps between progress lines (rank 0)"))
    log_level: str = field(default="INFO", metadata=_opt(str, "logging level"))
    summary_file: str | None = field(
        default=None, metadata=_opt(parse_optional_str, "rank 0 writes the run summary JSON here")
    )
    profile_steps: str | None = field(
        default=None, metadata=_opt(parse_optional_str, "START:END global steps to profile")
    )
    profile_dir: str = field(default="profiles", metadata=_opt(str, "where profiler traces go"))
    # Start-up
    prefetch_imports: bool = field(
        default=True, metadata=_opt(parse_bool, "import torch._dynamo while the rendezvous waits")
    )
    # Checkpoint and preemption
    checkpoint_dir: str | None = field(
        default=None, metadata=_opt(parse_optional_str, "rank 0 writes checkpoints here; empty disables")
    )
    checkpoint_every: int = field(default=0, metadata=_opt(int, "steps between checkpoints; 0 = per epoch"))
    keep_checkpoints: int = field(default=2, metadata=_opt(int, "checkpoints kept on disk"))
    preemption_grace_seconds: float = field(
        default=20.0, metadata=_opt(float, "budget to finish the step and save after SIGTERM")
    )
    termination_log: str | None = field(
        default="/dev/termination-log",
        metadata=_opt(parse_optional_str, "where a fatal error's cause goes for Kubernetes; empty: nowhere"),
    )

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_bounds()
        if self.user_entrypoint is not None and ":" not in self.user_entrypoint:
            raise _fail("user_entrypoint", f"must be module:function, got {self.user_entrypoint!r}")
        if self.profile_steps is not None:
            self.profile_range()  # validates

    def _check_choices(self) -> None:
        """Every field that declares `choices` (the same tuple the flag parser offers)."""
        for f in _fields():
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise _fail(f.name, f"must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")

    def _check_bounds(self) -> None:
        positive = ("dataset_size", "image_size", "num_classes", "batch_size", "epochs", "prefetch_factor")
        for name in (*positive, "autotune_batches", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise _fail(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "sample_cost_us", "checkpoint_every", "metrics_port"):
            if getattr(self, name) < 0:
                raise _fail(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("cpu_limit", "lr", "autotune_seconds", "preemption_grace_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise _fail(name, f"must be > 0, got {value}")
        if self.num_workers is not None and self.num_workers < 0:
            raise _fail("num_workers", f"must be auto or >= 0, got {self.num_workers}")
        if not 0 <= self.loader_worker_nice <= MAX_NICE:
            raise _fail("loader_worker_nice", f"must be in 0-{MAX_NICE}, got {self.loader_worker_nice}")
        if self.metrics_port > 65535:
            raise _fail("metrics_port", f"must be <= 65535, got {self.metrics_port}")
        if self.cuda_memory_fraction is not None and not 0 < self.cuda_memory_fraction <= 1:
            raise _fail("cuda_memory_fraction", f"must be in (0, 1], got {self.cuda_memory_fraction}")

    def profile_range(self) -> tuple[int, int] | None:
        """The `[start, end)` global steps to profile, from `START:END`."""
        if self.profile_steps is None:
            return None
        try:
            start_text, end_text = self.profile_steps.split(":")
            start, end = int(start_text), int(end_text)
        except ValueError:
            raise _fail("profile_steps", f"must be START:END, got {self.profile_steps!r}") from None
        if not 0 <= start < end:
            raise _fail("profile_steps", f"needs 0 <= START < END, got {self.profile_steps!r}")
        return start, end


def _fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(TrainerConfig)


def env_names() -> set[str]:
    """Every env name the trainer reads: `TORCHJOB_<FLAG>` for each flag."""
    return {env_name(f.name) for f in _fields()}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Exit 1 like every other trainer error (argparse's 2 would be one more code to classify).
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchjob-train",
        description="torchjob DDP trainer. Every flag has an env default TORCHJOB_<FLAG>.",
    )
    for f in _fields():
        extra: dict[str, Any] = {}
        help_text = f.metadata["help"]
        if "choices" in f.metadata:
            extra["choices"] = f.metadata["choices"]
            help_text += f": {', '.join(f.metadata['choices'])}"
        if f.metadata["parse"] in (parse_bool, parse_auto_bool):
            extra.update(nargs="?", const="true")  # `--autotune` alone means true
        # Keep raw strings: env and argv go through the same parser in from_sources.
        parser.add_argument(
            _flag(f.name), dest=f.name, default=None, metavar=f.name.upper(), help=help_text, **extra
        )
    return parser


def from_sources(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> TrainerConfig:
    """Build the config from argv (wins) and env (`TORCHJOB_*`), then validate."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in _fields():
        raw = getattr(args, f.name)
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise _fail(f.name, f"cannot parse {raw!r}: {exc}") from None
    return TrainerConfig(**values)
