"""`torchjob-train`: the program torchrun starts in every process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

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
    code = run(config)
    logging.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
