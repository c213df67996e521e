"""A local node SIGKILLed leaves nothing in the host's /dev/shm, as a pod's /dev/shm goes with the pod.

The node here is a real process tree with the two kinds of shared memory a trainer node holds: batches
in flight from DataLoader workers under the `file_system` strategy (files that torch's shm manager
registered) and the named semaphores of a forkserver child (which multiprocessing's resource tracker
registered), as torch elastic's forkserver workers have."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from torchjob_cli import procs

NODE = """
import multiprocessing, time
import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    forkserver = multiprocessing.get_context("forkserver")
    lock = forkserver.Lock()
    child = forkserver.Process(target=time.sleep, args=(600,))
    child.start()
    torch.multiprocessing.set_sharing_strategy("file_system")
    loader = DataLoader(TensorDataset(torch.zeros(256, 1024)), batch_size=8, num_workers=2,
                        persistent_workers=True, multiprocessing_context="fork")
    batches = iter(loader)
    held = [next(batches) for _ in range(2)]
    print(lock._semlock.name, flush=True)
    time.sleep(600)
"""
SHM = Path("/dev/shm")


def batch_files(pids: list[int]) -> set[Path]:
    """The DataLoader batches of the processes, received or in flight: torch names each file after the
    process that created it."""
    return {path for pid in pids for path in SHM.glob(f"torch_{pid}_*")}


def test_a_killed_node_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    script = tmp_path / "node.py"
    script.write_text(NODE)
    node = procs.start([sys.executable, str(script)], env=dict(os.environ), cwd=tmp_path)
    try:
        assert node.proc.stdout is not None
        semaphore = SHM / f"sem.{node.proc.stdout.readline().decode().strip().lstrip('/')}"
        time.sleep(0.5)  # the workers' prefetched batches
        pids = procs.members([node])
        held = {semaphore, *batch_files(pids)}
        assert all(p.exists() for p in held) and len(held) > 1, held
        assert sum(procs.cleans_up(pid) for pid in pids) >= 2  # a shm manager and the tracker
    finally:
        procs.kill([node])
        if node.proc.stdout is not None:
            node.proc.stdout.close()
    assert procs.members([node]) == []
    assert sorted(p for p in held if p.exists()) == []


def test_a_cleanup_process_that_lingers_is_killed_after_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procs, "CLEANUP_SECONDS", 0.5)
    lingering = "(exec -a torch_shm_manager sleep 600) & echo started; wait"
    node = procs.start(["bash", "-c", lingering], env=dict(os.environ), cwd=tmp_path)
    try:
        assert node.proc.stdout is not None
        assert node.proc.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 10
        while not any(procs.cleans_up(pid) for pid in procs.members([node])):
            assert time.monotonic() < deadline, "the stand-in shm manager never started"
            time.sleep(0.05)
    finally:
        procs.kill([node])
        if node.proc.stdout is not None:
            node.proc.stdout.close()
    assert procs.members([node]) == []
