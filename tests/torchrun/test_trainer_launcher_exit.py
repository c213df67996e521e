"""The launcher exits with the failing worker's own code, where plain torchrun would exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness.polling import eventually
from harness.ports import free_port
from torchjob_trainer import startup
from torchrun.trainer_procs import (
    LAUNCH,
    listening,
    running,
    trainer_env,
    two_node_env,
)

WORKER = """
import os, signal, sys, time
rank = int(os.environ["RANK"])
mode = sys.argv[1]
if mode == "code" and rank == 1:
    sys.exit(7)
if mode == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "code":
    time.sleep(30)  # rank 0 outlives rank 1: the agent stops it when rank 1 fails
"""


@pytest.mark.parametrize(("mode", "nproc", "expected"), [("code", 2, 7), ("signal", 1, 137), ("ok", 1, 0)])
def test_exit_code_is_preserved(tmp_path: Path, mode: str, nproc: int, expected: int) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", str(nproc), "--", str(script), mode]
    with running(cmd, trainer_env(), tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=120)
        output = proc.output()
    assert rc == expected, output[-3000:]
    if expected:
        assert f"exit code {expected}" in output


SAVER = """
import os, signal, sys, time
release = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the preempted node stops at once
open(release + ".started-" + os.environ["RANK"], "w").close()
while not os.path.exists(release):  # the other one is still "saving its checkpoint"
    time.sleep(0.05)
sys.exit(143)
"""


def test_losing_the_store_host_first_keeps_the_workers_code(tmp_path: Path) -> None:
    """The node hosting the c10d store is preempted and exits while the other node's worker still
    saves: that launcher must report its worker's 143, not fail on its next membership poll."""
    script, release = tmp_path / "saver.py", tmp_path / "release"
    script.write_text(SAVER)
    rdzv = free_port()
    cmd = [LAUNCH, "--", str(script), str(release)]
    env = two_node_env(rdzv, "store-loss")
    with running(cmd, env, tmp_path / "host.log") as host:
        eventually(lambda: listening(rdzv), 60, "the rendezvous store", watch=host)
        with running(cmd, env, tmp_path / "client.log") as client:
            eventually(
                lambda: len(list(tmp_path.glob("release.started-*"))) == 2, 120, "both workers", watch=client
            )
            host.popen.terminate()
            host_rc = host.wait(timeout=60)
            # Many 0.1 s membership polls happen against the dead store before the worker exits.
            eventually(
                lambda: "rendezvous store is gone" in client.output(), 30, "the store-loss log", watch=client
            )
            release.touch()
            client_rc = client.wait(timeout=60)
            output = host.output() + client.output()
    assert (host_rc, client_rc) == (143, 143), output[-4000:]


KILLER = """
import os, signal, time
def build(config):
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    time.sleep(60)
"""


def test_a_forked_trainer_killed_by_a_signal_reports_it(tmp_path: Path) -> None:
    """`torchjob-train` workers are forked from the launcher's preloaded server (forkstart); a worker
    that dies of SIGKILL still gives 137."""
    (tmp_path / "killer.py").write_text(KILLER)
    env = trainer_env(PYTHONPATH=str(tmp_path), TORCHJOB_METRICS_PORT="0")
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train"]
    cmd += ["--user-entrypoint", "killer:build"]
    with running(cmd, env, tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=120)
        output = proc.output()
    assert rc == 137, output[-3000:]
    assert "exit code 137" in output
    assert "start_method: forkserver" in output


def one_process(tmp_path: Path, env: dict[str, str], *trainer_args: str) -> tuple[int, str]:
    """`torchjob-train` under the launcher, one process standalone: its exit code and output."""
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "1", "--", "torchjob-train", *trainer_args]
    with running(cmd, env, tmp_path / "out.log") as proc:
        return proc.wait(timeout=120), proc.output()


@pytest.mark.parametrize(("start", "first_phase"), [("", "forked"), ("exec", "imports")])
def test_the_worker_start_setting_picks_fork_or_exec(tmp_path: Path, start: str, first_phase: str) -> None:
    env = trainer_env(TORCHJOB_METRICS_PORT="0", TORCHJOB_WORKER_START=start)
    args = ("--steps-per-epoch", "3", "--batch-size", "8", "--num-workers", "1")
    rc, output = one_process(tmp_path, env, *args)
    assert rc == 0, output[-3000:]
    line = next(line for line in output.splitlines() if startup.PHASES_PREFIX in line)
    phases = json.loads(line.split(startup.PHASES_PREFIX)[1].split("; ")[0])
    assert [p for p in phases if p in ("forked", "interpreter", "imports")][-1] == first_phase


def test_a_socket_interface_the_pod_lacks_fails_before_any_worker(tmp_path: Path) -> None:
    """spec.networkInterface naming an interface this machine lacks: one line naming it and what there
    is, also in the termination message, exit 1 before torchrun starts (gloo would fail later, NCCL
    obscurely)."""
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    env = trainer_env(
        GLOO_SOCKET_IFNAME="nosuch0",
        NCCL_SOCKET_IFNAME="nosuch0",
        TORCHJOB_TERMINATION_LOG=str(termination_log),
    )
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "1", "--", "torchjob-train"]
    with running(cmd, env, tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=120)
        output = proc.output()
    assert rc == 1, output[-3000:]
    message = termination_log.read_text()
    assert "GLOO_SOCKET_IFNAME=nosuch0: no interface nosuch0 in this pod (it has: lo" in message
    assert "NCCL_SOCKET_IFNAME=nosuch0: matches no interface" in message
    assert message in output
    assert "joined process group" not in output


FAILING_MODEL = """
import torch
from torch import nn
from torchjob_trainer.data.datasets import SyntheticDataset
from torchjob_trainer.userapi import Workload

class FailsAtStep3(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(3 * 8 * 8, 10), 0
    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("the user's model failed at step 3")
        return self.lin(x.flatten(1))

def build(config):
    return Workload(FailsAtStep3(), SyntheticDataset(512, (3, 8, 8), 10), nn.CrossEntropyLoss(),
                    lambda params: torch.optim.SGD(params, lr=0.1))
"""


@pytest.mark.parametrize("start", ["", "exec"])
def test_a_user_model_that_raises_with_loader_workers_fails_the_rank(tmp_path: Path, start: str) -> None:
    """The loader workers ignore SIGTERM (for the preemption checkpoint), and the traceback keeps their
    iterator alive: multiprocessing's exit hook then joined them for ever and the rank hung in place of
    failing. The trainer ends them itself; the rank exits 1 naming the error, forked or exec'd."""
    (tmp_path / "failing.py").write_text(FAILING_MODEL)
    env = trainer_env(PYTHONPATH=str(tmp_path), TORCHJOB_METRICS_PORT="0", TORCHJOB_WORKER_START=start)
    args = ("--user-entrypoint", "failing:build", "--num-workers", "2", "--batch-size", "8")
    rc, output = one_process(tmp_path, env, *args)
    assert rc == 1, output[-3000:]
    assert "RuntimeError: the user's model failed at step 3" in output
