"""A stand-in trainer for CLI supervision tests: no torch, starts in milliseconds.

Reads torchrun's RANK env; prints a few progress lines in the trainer's format, then behaves as told:
  --steps N           progress lines to print (one per --step-seconds)
  --crash-rank R      this rank raises (exit 1) after its steps
  --exit-code C       with --crash-rank: exit with C instead of raising
  --once-marker PATH  with --crash-rank: fail only while PATH does not exist (creates it), so a
                      restarted gang succeeds
  --hang              after the steps, sleep until signalled
  --wait-for PATH     before the steps, wait until PATH exists
  --ignore-sigterm    ignore SIGTERM (a rank stuck in a collective does not get to exit either)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--step-seconds", type=float, default=0.05)
    p.add_argument("--crash-rank", type=int, default=-1)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--once-marker", type=Path)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--wait-for", type=Path)
    p.add_argument("--ignore-sigterm", action="store_true")
    a = p.parse_args()
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    print(f"fake worker rank {rank}/{world} pid {os.getpid()} up", flush=True)
    while a.wait_for is not None and not a.wait_for.exists():
        time.sleep(0.05)
    for step in range(1, a.steps + 1):
        time.sleep(a.step_seconds)
        if rank == 0:
            fields = {
                "step": step,
                "total_steps": a.steps,
                "epoch": 0,
                "epochs": 1,
                "loss": 1.0 / step,
                "samples_per_second": 100.0,
                "step_seconds": a.step_seconds,
                "data_wait_ratio": 0.25,
            }
            print(f"torchjob-progress {json.dumps(fields)}", flush=True)
    if rank == a.crash_rank:
        first_time = a.once_marker is None or not a.once_marker.exists()
        if a.once_marker is not None:
            a.once_marker.touch()
        if first_time:
            if a.exit_code:
                print(f"fake worker rank {rank} exiting with {a.exit_code}", flush=True)
                return a.exit_code
            raise RuntimeError(f"fake worker rank {rank} crashed on purpose")
    if a.hang:
        print(f"fake worker rank {rank} hanging", flush=True)
        while True:
            time.sleep(1)
    print(f"fake worker rank {rank} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
