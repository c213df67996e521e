"""Workers forked from a server that has already imported torch, instead of one new program each.

torchrun starts every worker as a new program, so each one imports torch, `torch._dynamo` and the
trainer itself: about 2.6 s of CPU per process (docs/benchmarks-startup.md), paid once per worker per
attempt. When the command is `torchjob-train` (or `-m torchjob_trainer`), `torchjob-launch` instead
runs `main.worker` as torch elastic's function entrypoint under the `forkserver` start method, with
those modules preloaded in the server: they are imported once per node, while the agent waits in the
rendezvous, and every worker (and every restart of one) is a fork that finds them loaded.

The server is a fresh interpreter that the launcher starts before the rendezvous; it imports nothing
but the preload list, and it is single-threaded apart from torch's own import-time thread, as the
process that forks DataLoader workers is. Workers still get their own env, log files, SIGTERM and exit
codes from the agent. `TORCHJOB_WORKER_START=exec` keeps torchrun's new program per worker.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from torchjob_core import constants

from torchjob_trainer import startup

WORKER_START_ENV = "TORCHJOB_WORKER_START"
FORKSERVER, EXEC = "forkserver", "exec"
START_METHODS = (FORKSERVER, EXEC)
TRAINER_MODULE = "torchjob_trainer"
# What every worker imports before its first step: torch, what its first optimizer and DDP forward
# import (the background import's list), and the trainer (main imports train and the rest).
TRAINER_MAIN = "torchjob_trainer.main"
PRELOAD = ("torch", *startup.PREFETCH_MODULES, TRAINER_MAIN)
# torch logs a function worker's failure with the agent's own traceback (where it noticed the exit), which
# says nothing about the worker; a program worker's failure gets one line. Keep the line.
FUNCTION_WORKERS_LOGGER = "torch.distributed.elastic.multiprocessing.api"


class StartMethodError(ValueError):
    pass


def start_method(env: Mapping[str, str]) -> str:
    value = env.get(WORKER_START_ENV, FORKSERVER).strip().lower() or FORKSERVER
    if value not in START_METHODS:
        raise StartMethodError(f"{WORKER_START_ENV}={value!r}: expected one of {', '.join(START_METHODS)}")
    return value


def trainer_args(cmd: str | Callable[..., object], cmd_args: Sequence[str]) -> list[str] | None:
    """The trainer's own arguments when torchrun would run the trainer (its console script, or this
    Python with `-m torchjob_trainer`), else None."""
    if not isinstance(cmd, str):
        return None
    if os.path.basename(cmd) in constants.DEFAULT_COMMAND:
        return list(cmd_args)
    rest = list(cmd_args)
    if rest[:1] == ["-u"]:  # torchrun's unbuffered Python
        rest = rest[1:]
    if cmd == sys.executable and rest[:2] == ["-m", TRAINER_MODULE]:
        return rest[2:]
    return None


def trainer_entrypoint(
    cmd: str | Callable[..., object], cmd_args: Sequence[str], env: Mapping[str, str]
) -> tuple[Callable[..., int], list[str]] | None:
    """The function to fork in place of `cmd`, with its arguments, or None to run `cmd` as torchrun does."""
    args = trainer_args(cmd, cmd_args)
    if args is None or start_method(env) != FORKSERVER:
        return None
    return forked_worker, args


def forked_worker(*argv: str) -> int:
    """Runs in the forked worker, where the server has already imported the trainer. The agent only
    pickles a reference to this function: it never imports the trainer's modules itself."""
    code = importlib.import_module(TRAINER_MAIN).worker(*argv)
    # torch's @record turns sys.exit(0) (user code may call it) into None: success, as for a program.
    return 0 if code is None else int(code)


def start_forkserver(preload: tuple[str, ...] = PRELOAD) -> None:
    """Start the server now, so that its imports overlap the agent's rendezvous instead of following it."""
    multiprocessing.set_forkserver_preload(list(preload))
    multiprocessing.forkserver.ensure_running()
    logging.getLogger(FUNCTION_WORKERS_LOGGER).addFilter(without_traceback)


def without_traceback(record: logging.LogRecord) -> bool:
    if record.exc_info and str(record.msg).startswith("failed (exitcode"):
        record.exc_info, record.exc_text = None, None
    return True
