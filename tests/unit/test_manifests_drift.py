"""The generated CRD files match torchjob_core.crd (no helm needed; the tools tier checks the rest)."""

from __future__ import annotations

from pathlib import Path

import yaml
from harness.tools import load_gen_manifests

ROOT = Path(__file__).resolve().parents[2]


def test_crd_files_are_regenerated_identically() -> None:
    gen = load_gen_manifests()
    diffs = gen.drift(gen.render(crd_only=True))
    assert not diffs, "run hack/gen-manifests.py:\n" + "\n".join(diffs)


def test_chart_and_static_crd_are_the_same_bytes() -> None:
    gen = load_gen_manifests()
    assert (ROOT / "manifests" / "crd.yaml").read_bytes() == gen.CHART_CRD.read_bytes()
    (crd,) = [d for d in yaml.safe_load_all(gen.CHART_CRD.read_text()) if d]
    assert crd["metadata"]["name"] == "trainingjobs.torchjob.dev"


def test_drift_reports_a_stale_file(tmp_path: Path) -> None:
    gen = load_gen_manifests()
    stale = tmp_path / "x.yaml"
    stale.write_text("old\n")
    gen.ROOT = tmp_path  # type: ignore[attr-defined]
    (diff,) = gen.drift({stale: "new\n"})
    assert "-old" in diff and "+new" in diff
