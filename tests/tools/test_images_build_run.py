"""Builds both images with hack/build-images.sh and runs the trainer image's entrypoint on CPU.

Needs a Docker engine that answers `docker info`; skipped with the reason otherwise. The build is
offline-capable (--local-base: a debootstrap base and a host-side wheelhouse), as the development
machines reach no container registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TAG = "0.1.0-test"


@pytest.fixture(scope="module")
def docker() -> str:
    path = shutil.which("docker")
    if path is None:
        pytest.skip("no docker CLI: install docker.io and start dockerd to run the image tests")
    info = subprocess.run([path, "info"], capture_output=True, text=True, check=False, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"the Docker engine does not answer `docker info`: {info.stderr.strip()[-200:]}")
    return path


@pytest.fixture(scope="module")
def images(docker: str) -> dict[str, str]:
    args = ["--local-base"] if os.environ.get("TORCHJOB_IMAGE_BASE", "local") == "local" else []
    env = dict(os.environ, TAG=TAG, DOCKER=docker)
    proc = subprocess.run(
        [str(ROOT / "hack" / "build-images.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = proc.stdout.split()
    assert built == [f"torchjob-operator:{TAG}", f"torchjob-trainer:{TAG}"]
    return {name.split(":")[0].removeprefix("torchjob-"): name for name in built}


def run(docker: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker, "run", "--rm", *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def test_images_run_as_non_root(docker: str, images: dict[str, str]) -> None:
    for image in images.values():
        user = subprocess.run(
            [docker, "image", "inspect", "-f", "{{.Config.User}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert user == "10001:10001", image
        proc = run(docker, "--entrypoint", "id", image, "-u")
        assert proc.stdout.strip() == "10001", proc.stderr


def test_operator_image_starts_under_the_charts_security_context(docker: str, images: dict[str, str]) -> None:
    # What charts/torchjob sets: read-only root, no capabilities, no privilege escalation, /tmp an emptyDir.
    hardened = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp"]
    proc = run(docker, *hardened, "--user=10001:10001", images["operator"], "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--peering" in proc.stdout and "--health-port" in proc.stdout


def test_operator_image_has_no_torch_and_trainer_image_no_kopf(docker: str, images: dict[str, str]) -> None:
    probe = "import importlib.util as u, sys; sys.exit(0 if u.find_spec(sys.argv[1]) else 3)"
    assert run(docker, "--entrypoint", "python3", images["operator"], "-c", probe, "torch").returncode == 3
    assert run(docker, "--entrypoint", "python3", images["operator"], "-c", probe, "kopf").returncode == 0
    assert run(docker, images["trainer"], "python3", "-c", probe, "kopf").returncode == 3


def test_trainer_entrypoint_trains_a_few_steps_on_cpu(docker: str, images: dict[str, str]) -> None:
    # The image's default command: torchjob-launch --standalone, one process, 5 steps, gloo on CPU.
    proc = run(
        docker,
        "--shm-size=256m",
        "-e",
        "TORCHJOB_METRICS_PORT=0",
        "-e",
        "TORCHJOB_JOB_NAME=image-smoke",
        images["trainer"],
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "step" in proc.stdout + proc.stderr
