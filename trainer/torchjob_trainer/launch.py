"""`torchjob-launch`: torchrun in-process, exiting with the failing worker's own exit code.

Plain torchrun exits 1 whatever its workers exited with, which hides the difference between a
preempted worker (143, retryable) and a bug (1, permanent) from the operator. This launcher runs the
same elastic agent (configured by `PET_*` env and torchrun's flags, then `-- cmd args`) and exits with:

- 0 when every worker succeeded;
- the first failing worker's exit code (a worker killed by signal N gives 128+N);
- 128+N when the launcher itself got signal N (SIGTERM/SIGINT are forwarded to the workers by the
  agent, which waits for them up to its shutdown timeout);
- 1 for launcher errors (bad flags, rendezvous failures, a GLOO/NCCL_SOCKET_IFNAME naming an interface
  the pod lacks);
- `EXIT_RENDEZVOUS_UNREACHABLE` (69) when a node other than node 0 could not reach the rendezvous store
  before it started torchrun (`rendezvous_wait`: pods start in any order).

The agent's shutdown timeout defaults to `TORCHJOB_PREEMPTION_GRACE_SECONDS` + 10 s, so that workers
can finish their preemption checkpoint before they are killed.

The node that hosts the c10d store may be preempted first. torchrun's agent then fails its next
membership poll and abandons workers that are still saving, exiting 1 (a "bug") where its workers
would have exited 143. The launcher's c10d handler answers that poll with "nobody waiting" for up to the
shutdown timeout after the store is lost, so the workers' own exit decides the code.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous import (
    RendezvousConnectionError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    rendezvous_handler_registry,
)
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
from torch.distributed.launcher.api import elastic_launch
from torch.distributed.run import config_from_args, parse_args
from torchjob_core import constants

from torchjob_trainer import forkstart, interfaces, rendezvous_wait, termination
from torchjob_trainer.config import env_name

log = logging.getLogger("torchjob_trainer.launch")

EXIT_LAUNCHER_ERROR = 1
# Codes whose cause a worker already logged: say which, instead of torch's "To enable traceback" advice.
KNOWN_EXITS = {
    constants.EXIT_CHECKPOINT_WRITE_FAILED: "a checkpoint could not be written; rank 0's error line says why"
}
SHUTDOWN_MARGIN_SECONDS = 10


def exit_code_of(failure: ProcessFailure) -> int:
    """A worker's exit code as a shell would report it: signals become 128+N."""
    code = failure.exitcode
    if code < 0:
        return 128 + (-code)
    if code == 0:  # a failure record without a code: still a failure
        return EXIT_LAUNCHER_ERROR
    return min(code, 255)


def first_failure_code(error: ChildFailedError) -> int:
    _, failure = error.get_first_failure()
    return exit_code_of(failure)


def find_console_script(script: str) -> str | None:
    """The path of `script` when it is a console script (on PATH or next to this Python), else None.

    `torchjob-train` is then run directly rather than as `python torchjob-train`.
    """
    if script.endswith(".py") or os.path.isfile(script):
        return None
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    return shutil.which(script, path=search)


def shutdown_timeout(env: Mapping[str, str]) -> int | None:
    if "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" in env:
        return None  # torch reads it itself
    grace = env.get(constants.PREEMPTION_GRACE_ENV)
    try:
        return int(float(grace)) + SHUTDOWN_MARGIN_SECONDS if grace else None
    except ValueError:
        return None


STORE_LOSS_BACKEND = "torchjob-c10d"
STORE_LOSS_GRACE_KEY = "torchjob_store_loss_grace_s"


class StoreLossTolerantHandler(RendezvousHandler):
    """torchrun's c10d handler, except that a lost store reads as "no node waiting" for a while.

    No node can join through a store that is gone, so the answer is true; after `grace_s` the
    original error stands, so an agent whose workers hang does not wait forever.
    """

    def __init__(
        self, inner: RendezvousHandler, grace_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner, self._grace_s, self._clock = inner, grace_s, clock
        self._lost_at: float | None = None

    def get_backend(self) -> str:
        return STORE_LOSS_BACKEND

    @property
    def use_agent_store(self) -> bool:
        return self._inner.use_agent_store

    def next_rendezvous(self) -> RendezvousInfo:
        return self._inner.next_rendezvous()

    def is_closed(self) -> bool:
        return self._inner.is_closed()

    def set_closed(self) -> None:
        self._inner.set_closed()  # type: ignore[no-untyped-call]

    def num_nodes_waiting(self) -> int:
        try:
            return self._inner.num_nodes_waiting()
        except RendezvousConnectionError:
            now = self._clock()
            if self._lost_at is None:
                self._lost_at = now
                log.warning(
                    "the rendezvous store is gone (its node stopped first); letting the workers finish "
                    "for up to %.0f s",
                    self._grace_s,
                )
            if now - self._lost_at > self._grace_s:
                raise
            return 0

    def get_run_id(self) -> str:
        return self._inner.get_run_id()

    def shutdown(self) -> bool:
        return self._inner.shutdown()


def create_store_loss_tolerant_handler(params: RendezvousParameters) -> RendezvousHandler:
    config = dict(params.config)
    grace_s = float(config.pop(STORE_LOSS_GRACE_KEY, SHUTDOWN_MARGIN_SECONDS))
    inner = RendezvousParameters(
        "c10d",
        params.endpoint,
        params.run_id,
        params.min_nodes,
        params.max_nodes,
        params.local_addr,
        **config,
    )
    return StoreLossTolerantHandler(get_rendezvous_handler(inner), grace_s)


rendezvous_handler_registry.register(STORE_LOSS_BACKEND, create_store_loss_tolerant_handler)


def fail_before_start(message: str, code: int, env: Mapping[str, str]) -> NoReturn:
    """One error line, the same line as the container's termination message, and the exit code."""
    log.error("%s", message)
    termination.write(env.get(env_name("termination_log")), message)
    sys.exit(code)


def check_network_interfaces(env: Mapping[str, str]) -> None:
    """Fail at once when GLOO/NCCL_SOCKET_IFNAME name interfaces this pod lacks (`interfaces`)."""
    message = interfaces.check(env)
    if message is not None:
        fail_before_start(message, EXIT_LAUNCHER_ERROR, env)


def wait_for_rendezvous_store(
    backend: str, endpoint: str, rdzv_configs: Mapping[str, object], env: Mapping[str, str]
) -> None:
    """Before torchrun starts on a node that does not host the store: wait until the store accepts
    connections, or exit with `EXIT_RENDEZVOUS_UNREACHABLE` and a termination message."""
    store = rendezvous_wait.endpoint_to_wait_for(backend, endpoint, rdzv_configs)
    if store is None:
        return
    timeout_s = rendezvous_wait.wait_seconds(env)
    why = rendezvous_wait.wait_until_reachable(store, timeout_s)
    if why is None:
        return
    message = rendezvous_wait.unreachable_message(store, timeout_s, why)
    fail_before_start(message, constants.EXIT_RENDEZVOUS_UNREACHABLE, env)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s torchjob-launch: %(message)s")
    args = parse_args(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    if not args.module and not args.no_python:
        found = find_console_script(args.training_script)
        if found is not None:
            args.no_python, args.training_script = True, found
    # Same defaults as torchrun's run(): --standalone, or a single static node, means a local c10d store.
    if args.standalone:
        args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    elif args.rdzv_backend == "static" and not args.rdzv_endpoint and args.master_port is None:
        max_nodes = int(str(args.nnodes).split(":")[-1])
        if max_nodes == 1:
            args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    if args.master_port is None:
        args.master_port = 29500
    try:
        config, cmd, cmd_args = config_from_args(args)
        timeout = shutdown_timeout(os.environ)
        if timeout is not None:
            config.shutdown_timeout = timeout
        check_network_interfaces(os.environ)
        wait_for_rendezvous_store(config.rdzv_backend, config.rdzv_endpoint, config.rdzv_configs, os.environ)
        if config.rdzv_backend == "c10d":
            config.rdzv_backend = STORE_LOSS_BACKEND
            config.rdzv_configs[STORE_LOSS_GRACE_KEY] = config.shutdown_timeout
        forked = forkstart.trainer_entrypoint(cmd, cmd_args, os.environ)
        if forked is not None:
            config.start_method = forkstart.FORKSERVER
            forkstart.start_forkserver()
            cmd, cmd_args = forked
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = first_failure_code(exc)
        why = KNOWN_EXITS.get(code) or failure.message or "no message"
        log.error("worker rank %d failed with exit code %d (%s)", rank, code, why)
        sys.exit(code)
    except SignalException as exc:
        name = signal.Signals(exc.sigval).name
        log.warning("got %s; workers were signalled and stopped", name)
        sys.exit(128 + int(exc.sigval))
    except Exception as exc:
        log.error("launcher failed: %s", exc)
        sys.exit(EXIT_LAUNCHER_ERROR)
    sys.exit(0)


if __name__ == "__main__":
    main()
