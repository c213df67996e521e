"""The DataLoader benchmark runs end to end (tiny sizes; the real numbers are in docs/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.tools import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark() -> Any:
    return load_script("benchmarks/dataloader.py", "bench_dataloader")


def test_benchmark_reports_every_config(tmp_path: Path, capsys: object) -> None:
    bench = load_benchmark()
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
    assert all(r["fraction_of_bound"] > 0 for r in result["rows"])
    assert json.loads(out.read_text())["rows"][1]["name"] == "tuned"


def test_benchmark_jpeg_pipeline_against_the_bound() -> None:
    argv = [
        "--pipeline",
        "jpeg",
        "--model",
        "cnn",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "3",
    ]
    result = load_benchmark().main(
        [*argv, "--autotune-batches", "3", "--repeat", "1", "--dataset-size", "64", "--sweep", "1"]
    )
    assert [r["name"] for r in result["rows"]][-1] == "workers=1"
    bound = result["bound"]
    assert bound["fetch_cpu_seconds_per_sample"] > 0 and bound["step_cpu_seconds_per_sample"] > 0
    assert all(r["fraction_of_bound"] > 0 for r in result["rows"])


def test_ddp_overhead_benchmark_reports_the_ratio() -> None:
    bench = load_script("benchmarks/ddp_overhead.py", "bench_ddp")
    result = bench.main(["--model", "mlp", "--batch-size", "4", "--block", "2", "--rounds", "3", "--cpu"])
    assert result["backend"] == "gloo"
    assert result["ratio_median"] > 0 and result["cpu_ratio_median"] > 0
