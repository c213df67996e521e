"""`torchjob-train`: the program torchrun starts in every process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from torch.distributed.elastic.multiprocessing.errors import record

from torchjob_trainer.config import ConfigError, TrainerConfig, from_sources
from torchjob_trainer.train import run


@record
def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags (env defaults `TORCHJOB_*`), train, exit 0 / 143 (preempted) / 73 (checkpoint write
    failed) / 1 (error)."""
    exit_now(run(config_or_exit(argv)))


def config_or_exit(argv: Sequence[str] | None) -> TrainerConfig:
    """The trainer's config, or exit 1 with the error that names the flag."""
    try:
        return from_sources(argv)
    except ConfigError as exc:
        print(f"torchjob-train: error: {exc}", file=sys.stderr)
        sys.exit(1)


@record
def worker(*argv: str) -> int:
    """`torchjob-train` as a function, for workers forked from the launcher's server (`forkstart`).

    Success returns 0: torch's worker wrapper hands it to the agent and the process leaves through
    `os._exit`, skipping interpreter finalization as `exit_now` does. Any other code leaves at once,
    as the program would."""
    # A forkserver child inherits "forkserver" as its default start method; a program has the
    # platform's. Without this, each DataLoader worker would start a server of its own and import
    # torch again (seconds each).
    multiprocessing.set_start_method(None, force=True)
    code = run(config_or_exit(list(argv)), forked=True)
    if code != 0:
        exit_now(code)
    logging.shutdown()
    return 0


def exit_now(code: int) -> NoReturn:
    """Flush the logs and leave with `code`, skipping interpreter finalization. The run has decided its
    code and torn the process group down; what finalization would still do is destroy leftover C++ objects
    (gloo work and its threads) in arbitrary order, which can abort with SIGABRT and turn a clean 73 or 143
    into 134, a code the operator would misread as a crash."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
