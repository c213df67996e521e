"""The DataLoader benchmark runs end to end (tiny sizes; the real numbers are in docs/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_reports_every_config(tmp_path: Path, capsys: object) -> None:
    spec = importlib.util.spec_from_file_location("bench_dataloader", ROOT / "benchmarks" / "dataloader.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = ["--sample-cost-us", "100", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "4"]
    result = bench.main(
        [*argv, "--autotune-batches", "3", "--repeat", "1", "--dataset-size", "64", "--json", str(out)]
    )
    names = [r["name"] for r in result["rows"]]
    assert names == ["naive", "tuned", "autotuned", "tuned-per-sample"]
    assert result["rows"][0]["speedup_vs_naive"] == 1.0
    assert result["rows"][0]["settings"]["num_workers"] == 0
    assert all(0 <= r["data_wait_ratio"] <= 1 for r in result["rows"])
    assert json.loads(out.read_text())["rows"][1]["name"] == "tuned"
