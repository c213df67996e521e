"""Helpers for CLI tests that run `torchjob run` as a real process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
FAKE_WORKER = HERE / "cli_fake_worker.py"
TORCHJOB = str(Path(sys.executable).parent / "torchjob")
MARKER_ENV = "CLI_TEST_MARKER"


def fake_job(
    name: str, *, nodes: int = 2, procs: int = 1, worker_args: list[str], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "image": "unused:local",
            "nodes": nodes,
            "procsPerNode": procs,
            "backend": "gloo",
            "command": ["python", str(FAKE_WORKER)],
            "args": worker_args,
            "metrics": {"port": 0},
            **spec,
        },
    }


def write_manifest(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def processes_with_marker(marker: str) -> list[int]:
    """Pids (ours) whose environment carries the test's marker: the CLI and everything under it."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat[stat.rfind(")") + 2] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


class CliRun:
    """`torchjob run ...` in its own session, output to a file; always killed with its tree."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.log = tmp_path / f"cli-{self.marker[:8]}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHJOB_", "PET_"))}
        env.update(OMP_NUM_THREADS="1", COLUMNS="200", **{MARKER_ENV: self.marker})
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [TORCHJOB, "run", *args],
            env=env,
            cwd=tmp_path,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"torchjob exited {self.proc.returncode} before {text!r}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def wait(self, timeout: float = 180) -> int:
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Kill anything the test left behind (a failing test must not leak processes)."""
        for pid in processes_with_marker(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._fh.close()
