"""Helpers for tests that start real torchrun/trainer processes: own process groups, always cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.polling import eventually
from harness.procs import kill_tree
from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent
LAUNCH = str(BIN / "torchjob-launch")
TRAIN = str(BIN / "torchjob-train")


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port (a rendezvous store, say)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def trainer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHJOB_", "PET_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def two_node_env(rdzv_port: int, run_id: str, **extra: str) -> dict[str, str]:
    """What the operator renders for one of two pods: a c10d rendezvous on 127.0.0.1, one process each."""
    return trainer_env(
        PET_NNODES="2",
        PET_NPROC_PER_NODE="1",
        PET_RDZV_BACKEND="c10d",
        PET_RDZV_ENDPOINT=f"127.0.0.1:{rdzv_port}",
        PET_RDZV_ID=run_id,
        **extra,
    )


class Proc:
    """A process in its own session; output goes to a file the test can read while it runs."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115  (closed in stop)
        self.popen = subprocess.Popen(
            list(cmd), env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_reason(self) -> str | None:
        code = self.popen.poll()
        return None if code is None else f"process exited ({code})"

    def failure(self, message: str) -> AssertionError:
        return AssertionError(f"{message}:\n{self.output()[-4000:]}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"timed out after {timeout} s; output:\n{self.output()[-4000:]}") from None

    def stop(self) -> None:
        # torchrun starts workers in sessions of their own, so killing our process group is not enough:
        # freeze the whole tree first (no new children), then kill every process in it.
        kill_tree(self.popen.pid)
        self.popen.wait(timeout=30)
        self._fh.close()


@contextlib.contextmanager
def running(cmd: Sequence[str], env: dict[str, str], log: Path) -> Iterator[Proc]:
    proc = Proc(cmd, env, log)
    try:
        yield proc
    finally:
        proc.stop()


FIRST_STEP_METRICS = ("torchjob_trainer_samples_total", "torchjob_trainer_startup_seconds")


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def samples(text: str) -> dict[str, tuple[dict[str, str], float]]:
    """name -> (labels, value) of the last sample with that name."""
    out: dict[str, tuple[dict[str, str], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = (dict(s.labels), float(s.value))
    return out


def _trained_a_step(got: dict[str, tuple[dict[str, str], float]]) -> bool:
    """Samples counted and the start-up figures set: both happen at the end of the first step."""
    return all(got.get(name, ({}, 0.0))[1] > 0 for name in FIRST_STEP_METRICS)


def startup_phases(text: str) -> dict[str, float]:
    """phase -> seconds of `torchjob_trainer_startup_phase_seconds` in one scrape."""
    return {
        s.labels["phase"]: float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "torchjob_trainer_startup_phase_seconds"
    }


def scrape_while_training(port: int, proc: Proc, timeout: float = 120) -> str:
    """A scrape taken after the rank has finished at least one step."""
    return scrape_all_while_training({port: proc}, timeout)[port]


def scrape_all_while_training(targets: dict[int, Proc], timeout: float = 120) -> dict[int, str]:
    """One scrape per port, each taken after that rank trained a step; all ports are polled together."""
    got: dict[int, str] = {}

    def trained() -> bool:
        for port, proc in targets.items():
            if port in got:
                continue
            text = scrape(port)
            if text and _trained_a_step(samples(text)):
                got[port] = text
            elif proc.popen.poll() is not None:
                raise AssertionError(
                    f"exited ({proc.popen.returncode}) before :{port} was scraped:\n{proc.output()[-4000:]}"
                )
        return len(got) == len(targets)

    eventually(trained, timeout, f"scrapes with samples on {sorted(targets)}")
    return got


def progress_lines(output: str) -> list[dict[str, Any]]:
    from torchjob_trainer.logs import parse_progress

    return [p for line in output.splitlines() if (p := parse_progress(line)) is not None]


def read_summary(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
