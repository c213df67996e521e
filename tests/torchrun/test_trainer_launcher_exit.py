"""The launcher exits with the failing worker's own code, where plain torchrun would exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchrun.trainer_procs import LAUNCH, running, trainer_env

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
