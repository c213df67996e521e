"""When the preemption grace runs out before the checkpoint, the process still exits 143 on its own."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, signal, time
from torchjob_trainer.preemption import Preemption
p = Preemption(grace_seconds=0.5)
p.install()
os.kill(os.getpid(), signal.SIGTERM)
assert p.requested
time.sleep(30)  # a save that hangs, or a collective whose peer died
"""


def test_grace_expiry_exits_143() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 143, proc.stderr
    assert "grace of 0.5 s ran out" in proc.stderr
