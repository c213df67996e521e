"""`torchjob-train`: the program torchrun starts in every process."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from torch.distributed.elastic.multiprocessing.errors import record

from torchjob_trainer.config import ConfigError, from_sources
from torchjob_trainer.train import run


@record
def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags (env defaults `TORCHJOB_*`), train, exit 0 / 143 (preempted) / 73 (checkpoint write
    failed) / 1 (error)."""
    try:
        config = from_sources(argv)
    except ConfigError as exc:
        print(f"torchjob-train: error: {exc}", file=sys.stderr)
        sys.exit(1)
    exit_now(run(config))


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
