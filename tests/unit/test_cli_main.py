"""The CLI's front door: bad manifests fail with admission's field-naming errors, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torchjob_cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-gloo-2node.yaml"


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_invalid_spec_names_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["nodes"] = 0
    del doc["spec"]["image"]
    code = main(["run", str(write(tmp_path, doc)), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "spec.nodes:" in err and "spec.image:" in err
    assert not (tmp_path / "run").exists()


def test_wrong_kind_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["kind"] = "Job"
    assert main(["run", str(write(tmp_path, doc))]) == 2
    assert "kind: Unsupported value" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["a: [", "- 1\n- 2\n"])
def test_unreadable_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_submit_dry_run_validates_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
                "current-context": "x",
            }
        )
    )
    code = main(["submit", str(EXAMPLE), "--dry-run", "--kubeconfig", str(kubeconfig)])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    assert "namespace: team" in out and "trainingjob.torchjob.dev/cpu-gloo valid (dry run)" in out
    # The example keeps checkpoints in an emptyDir: one line on stderr says they die with their pods.
    lines = captured.err.splitlines()
    warnings = [line for line in lines if line.startswith("warning: cpu-gloo: checkpoints go to")]
    assert len(warnings) == 1 and "set spec.checkpoint.storage" in warnings[0]


def test_local_run_plan_warns_once_about_ephemeral_checkpoints(tmp_path: Path) -> None:
    from rich.console import Console
    from torchjob_cli import local, manifests

    console = Console(record=True, width=400)
    local._print_plan(console, manifests.load_job_file(EXAMPLE), tmp_path, {})
    lines = [line for line in console.export_text().splitlines() if "checkpoints go to" in line]
    assert lines == [
        "torchjob: warning: on a cluster checkpoints go to an emptyDir at /checkpoints and are lost when "
        "a pod is replaced (gang restart, preemption, node loss): set spec.checkpoint.storage or mount a "
        "volume there"
    ]


def test_local_run_plan_names_the_checkpoint_a_rerun_resumes_from(tmp_path: Path) -> None:
    from rich.console import Console
    from torchjob_cli import local, localplan, manifests

    job = manifests.load_job_file(EXAMPLE)
    localplan.fresh_run_dir(tmp_path)
    for name in ("ckpt-000000010.pt", "ckpt-000000020.pt"):
        (localplan.checkpoint_dir(tmp_path) / name).write_bytes(b"")
    console = Console(record=True, width=400)
    local._print_plan(console, job, tmp_path, {})
    newest = tmp_path / "checkpoints" / "ckpt-000000020.pt"
    want = f"torchjob: resuming from {newest} (global step 20); --fresh starts over"
    assert want in console.export_text().splitlines()
