"""charts/torchjob/README.md is helm-docs' output for the chart, and every value has a description."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "gen-chart-readme.sh"


def _check(chart: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "CHART": str(chart)}
    return subprocess.run(
        [str(SCRIPT), "--check"], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_chart_readme_is_up_to_date() -> None:
    result = _check(ROOT / "charts" / "torchjob")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_value_without_a_description_fails_naming_its_key(tmp_path: Path) -> None:
    chart = tmp_path / "torchjob"
    shutil.copytree(ROOT / "charts" / "torchjob", chart)
    with (chart / "values.yaml").open("a") as values:
        values.write("\nundocumented: 1\nsection:\n  # -- Documented.\n  ok: 2\n  leaf: 3\n")
    result = _check(chart)
    assert result.returncode == 1
    assert "no '# --' description for: undocumented section.leaf" in result.stderr
