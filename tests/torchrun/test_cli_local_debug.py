"""spec.debug and spec.networkInterface on real ranks: `torchjob run` trains with the presets (gloo bound
to the loopback interface) and torch reports both."""

from __future__ import annotations

from pathlib import Path

from torchrun.cli_procs import CliRun, processes_with_marker, write_manifest

JOB = {
    "apiVersion": "torchjob.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "debug"},
    "spec": {
        "image": "unused:local",
        "nodes": 2,
        "procsPerNode": 1,
        "backend": "gloo",
        "debug": True,
        "networkInterface": "lo",
        "args": ["--model", "mlp", "--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "3"],
        "metrics": {"port": 0},
        "dataLoader": {"numWorkers": 0},
    },
}


def test_debug_presets_reach_torch_and_training_still_succeeds(tmp_path: Path) -> None:
    run = CliRun([str(write_manifest(tmp_path, JOB)), "--workdir", str(tmp_path / "run")], tmp_path)
    try:
        code = run.wait(timeout=300)
        out = run.output()
    finally:
        run.cleanup()
    assert code == 0, out[-4000:]
    assert "[c10d] The debug level is set to INFO." in out  # TORCH_DISTRIBUTED_DEBUG + TORCH_CPP_LOG_LEVEL
    assert out.count("gloo_socket_ifname: lo") >= 2  # DDP's INFO log, from each rank
    assert "debug Succeeded" in out
    assert processes_with_marker(run.marker) == []
