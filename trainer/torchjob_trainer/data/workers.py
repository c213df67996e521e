"""Loader worker processes: how they start, how they hand batches over, and that they end on every way out.

**Hand-over (torch's sharing strategy).** Both strategies put a batch's tensors in /dev/shm; they differ
in how the receiver finds them. `file_descriptor` (torch's default on Linux) passes each tensor's file
descriptor over a fresh Unix socket: the training process connects to a listener thread in the worker,
authenticates and receives the descriptor, once per tensor of every batch, so each hand-over waits for
that worker thread to be scheduled. `file_system` names the file instead and the receiver opens it by
name; torch's `torch_shm_manager` unlinks what a crashed process left. On 2 cores this cuts the CPU a
batch costs to hand over by about 40% and the data wait of the JPEG benchmark by about a third
(docs/benchmarks-dataloader.md). The strategy is set in the workers only (the sender picks it), so the
training process and the user's own multiprocessing keep torch's default. With `--loader-slots` (the
default) most batches skip this path: the strategy carries each worker's block of reused slots once,
and only what does not fit a slot (data/slots.py).

**Priority (`--loader-worker-nice`).** The training step is the pipeline's critical path: a worker that
decodes ahead only fills a queue, a step that waits holds every rank back. With as many workers as CPUs
plus the training process, the kernel shares the cores fairly among them, so the step runs on part of a
core while the workers race ahead, fill their prefetch and then block, leaving a core idle. Workers at a
higher niceness run only on what the training process leaves, and the kernel is work-conserving, so
they still take every idle cycle. On 2 CPUs (JPEG decode, docs/benchmarks-dataloader.md) nice 10 raised
samples/s by 2-5% at 2 workers and 4-17% at 3-4, idle time fell from 5-9% to 2%. Niceness counts only
among the processes of one cgroup: a pod's workers yield to its own training process, never to another
pod.

**SIGTERM.** torchrun signals a rank's whole process group on shutdown; a loader worker dying of it
would make the main process fail the step it is finishing for its preemption checkpoint, so workers
ignore it. The price: multiprocessing's last resort at exit (terminate every child, then join it) cannot
end them, and a rank whose workers were still alive when an error left the trainer (a user's model or
dataset raising: the traceback keeps the loader iterator alive) hung there for ever instead of failing.
So the trainer ends every loader's workers itself before it leaves (`end_workers`), on every path. Any
other program that makes our loaders (a benchmark, a notebook, a user's own script) gets the same at
interpreter exit: `end_workers` is an atexit hook registered after multiprocessing's own (importing torch
imports it), and atexit runs the last registered first. The trainer's own call stays: a forked rank
leaves through `os._exit` after multiprocessing's exit hook, where atexit hooks never run.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import weakref
from typing import Any

import torch
import torch.multiprocessing

from torchjob_trainer.config import LOADER_SHARING

log = logging.getLogger(__name__)

DEFAULT_SHARING = LOADER_SHARING[0]
# Every multi-process loader iterator this process made and still holds (TunedDataLoader adds them).
_iterators: weakref.WeakSet[Any] = weakref.WeakSet()


def _shares_by_name() -> bool:
    """Whether this process can put a tensor in shared memory by name (starts its torch_shm_manager)."""
    try:
        torch.UntypedStorage(8)._share_filename_cpu_()  # type: ignore[no-untyped-call]
    except (RuntimeError, OSError) as e:
        reason = str(e).splitlines()[0]
        log.warning("loader sharing file_system unusable here (%s); using file_descriptor", reason)
        return False
    return True


def lower_priority(nice: int) -> None:
    """Add `nice` to this process's niceness (raising it needs no privilege; a sandbox that forbids it
    costs the speed-up, not the run)."""
    if nice:
        try:
            os.nice(nice)
        except OSError as e:
            log.warning("loader worker cannot lower its priority (%s); it runs at the trainer's", e)


class WorkerInit:
    """DataLoader worker init: SIGTERM left to the main process, the priority, the sharing strategy.

    The strategy is checked in the worker, where it applies: a host whose shm manager cannot start (a
    read-only root with no writable TMPDIR) keeps torch's default and says so; the run goes on. A
    class, not a closure, so that a spawned worker can unpickle it.
    """

    def __init__(self, sharing: str, nice: int = 0) -> None:
        self.sharing = sharing
        self.nice = nice

    def __call__(self, _worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lower_priority(self.nice)
        if self.sharing == "file_system" and not _shares_by_name():
            return
        torch.multiprocessing.set_sharing_strategy(self.sharing)  # type: ignore[no-untyped-call]


def track(iterator: Any) -> Any:
    """`iterator`, remembered until it is gone, so that `end_workers` can reach its workers."""
    if getattr(iterator, "_workers", None):
        _iterators.add(iterator)
    return iterator


def end_workers() -> None:
    """End the workers of every loader iterator still alive, as the iterator would at its end: the stop
    sentinel, then a join. One stuck in user code past the join's timeout is killed (it ignores the
    SIGTERM torch's shutdown sends last)."""
    for iterator in list(_iterators):
        iterator._shutdown_workers()
        for worker in iterator._workers:
            if worker.is_alive():
                log.warning("loader worker pid %d did not stop; killing it", worker.pid)
                worker.kill()
                worker.join()
        _iterators.discard(iterator)


atexit.register(end_workers)
