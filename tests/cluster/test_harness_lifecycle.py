"""The harness leaves nothing running: on stop, on a crash of its own process, and on a failed start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness.controlplane import ControlPlane
from harness.kubectl import bind
from harness.polling import eventually
from harness.procs import ComponentFailedError

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan's zombie may linger in containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_ends_every_process_and_removes_the_directory(k8s_bin_dir: Path, tmp_path: Path) -> None:
    with ControlPlane(bin_dir=k8s_bin_dir, default_nodes=False) as cp:
        pids = [c.pid for c in cp.components.values()]
        assert len(pids) == 5 and all(running(p) for p in pids)
        workdir = cp.dir
    assert not any(running(p) for p in pids)
    assert not workdir.exists()


def test_killed_parent_leaves_no_component_running(k8s_bin_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from harness.controlplane import ControlPlane
        cp = ControlPlane(bin_dir=Path({str(k8s_bin_dir)!r}), default_nodes=False).start()
        print(json.dumps({{"pids": [c.pid for c in cp.components.values()], "dir": str(cp.dir)}}), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        started = json.loads(parent.stdout.readline())
        pids: list[int] = started["pids"]
        assert len(pids) == 5 and all(running(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finally: only the reaper can clean up
        parent.wait()
        eventually(lambda: not any(running(p) for p in pids), 30, "components gone after SIGKILL of parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    # Only processes were the reaper's job; the crashed run's directory is left for a look, so remove it.
    subprocess.run(["rm", "-rf", started["dir"]], check=True)


@pytest.mark.parametrize(
    ("message", "attempts"),
    [("etcdmain: boom", 1), ("listen tcp 127.0.0.1:2379: bind: address already in use", 3)],
)
def test_failed_start_raises_with_the_component_log_tail(tmp_path: Path, message: str, attempts: int) -> None:
    """A crash fails at once; a lost race for a free port is retried on new ports."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    runs = tmp_path / "runs"
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        exe = fake_bin / name
        exe.write_text(f"#!/bin/sh\necho run >> {runs}\necho '{message}' >&2\nexit 1\n")
        exe.chmod(0o755)
    cp = ControlPlane(bin_dir=fake_bin, workdir=tmp_path / "cp")
    with pytest.raises(ComponentFailedError, match="etcd exited before healthy") as info:
        cp.start()
    assert message in str(info.value)
    assert len(runs.read_text().splitlines()) == attempts
    assert (tmp_path / "cp" / "logs" / "etcd.log").exists()  # kept for a look
    assert not cp.components


def test_developer_command_prints_kubeconfig_and_stops_on_ctrl_c(k8s_bin_dir: Path) -> None:
    env = {**os.environ, "K8SBIN_DIR": str(k8s_bin_dir), "PYTHON": sys.executable}
    up = subprocess.Popen(
        ["bash", str(REPO_ROOT / "hack" / "cluster.sh"), "up", "--no-nodes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert up.stdout is not None
        line = up.stdout.readline().strip()
        assert line.startswith("export KUBECONFIG=")
        kubeconfig = Path(line.split("=", 1)[1])
        kubectl = bind(kubeconfig)
        assert "kube-system" in kubectl("get", "namespaces", "-o", "name").stdout
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        assert not kubeconfig.parent.exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()
