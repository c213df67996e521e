"""The DataLoader benchmark runs end to end (tiny sizes; the real numbers are in docs/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness.tools import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark() -> Any:
    return load_script("benchmarks/dataloader.py", "bench_dataloader")


def test_benchmark_reports_every_config(tmp_path: Path, capsys: object) -> None:
    bench = load_benchmark()
    out = tmp_path / "bench.json"
    argv = ["--sample-cost-us", "100", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "4"]
    argv += ["--autotune-batches", "3", "--repeat", "1", "--dataset-size", "64", "--headroom-batches", "3"]
    result = bench.main([*argv, "--json", str(out)])
    names = [r["name"] for r in result["rows"]]
    assert names == [
        "naive",
        "tuned",
        "autotuned",
        "tuned-per-sample",
        "tuned-torch",
        "tuned-fd",
        "tuned-nice0",
    ]
    assert result["rows"][0]["speedup_vs_naive"] == 1.0
    assert result["rows"][0]["settings"]["num_workers"] == 0
    assert all(0 <= r["data_wait_ratio"] <= 1 for r in result["rows"])
    assert all(r["fraction_of_bound"] > 0 for r in result["rows"])
    assert all(r["fraction_of_busy_bound"] > 0 for r in result["rows"])
    assert result["bound"]["busy_bound_samples_per_second"] > 0
    assert_cpu_accounting(result["rows"])
    saved = json.loads(out.read_text())
    assert saved["rows"][1]["name"] == "tuned"
    assert_headroom_and_epoch_two(saved)


def assert_cpu_accounting(rows: list[dict[str, Any]]) -> None:
    """Every row says where its CPU went; in-process loading has no workers to spend any."""
    assert all(0 <= r["idle_share"] <= 1 and r["cpu_vs_serial"] > 0 for r in rows)
    assert rows[0]["descendants_cpu_seconds_per_sample"] == 0
    assert rows[1]["settings"]["num_workers"] == 0 or rows[1]["descendants_cpu_seconds_per_sample"] > 0


def assert_headroom_and_epoch_two(result: dict[str, Any]) -> None:
    """The headroom columns on every row and the epoch-2 first-batch latency, persistent and not."""
    keys = ("loader_only_samples_per_second", "model_only_samples_per_second", "headroom")
    assert all(r[k] > 0 for r in result["rows"] for k in keys)
    for r in result["rows"]:
        assert r["headroom"] == pytest.approx(r[keys[0]] / r[keys[1]])
    assert [e["name"] for e in result["epoch2"]] == ["one iterator", "persistent", "non-persistent"]
    assert [e["settings"]["persistent_workers"] for e in result["epoch2"]] == [True, True, False]
    keys = ("epoch2_first_batch_seconds", "epoch1_median_step_seconds", "epoch2_first_batch_in_steps")
    assert all(e[k] > 0 for e in result["epoch2"] for k in keys)
    assert all(len(result["machine"][k]) == 3 for k in ("load_average_start", "load_average_end"))
    assert any("not the GPU's H" in note for note in result["notes"])


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
    argv += ["--autotune-batches", "3", "--repeat", "1", "--dataset-size", "64", "--headroom-batches", "3"]
    result = load_benchmark().main([*argv, "--sweep", "1", "--sweep-nice", "0"])
    rows = {r["name"]: r["settings"] for r in result["rows"]}
    assert rows["workers=1"]["worker_nice"] == rows["tuned"]["worker_nice"] == 10
    assert rows["workers=1 nice=0"] == {**rows["workers=1"], "worker_nice": 0}
    assert f"workers={rows['tuned']['num_workers']} nice=0" not in rows  # tuned-nice0 runs it once
    bound = result["bound"]
    assert bound["fetch_cpu_seconds_per_sample"] > 0 and bound["step_cpu_seconds_per_sample"] > 0
    assert all(r["fraction_of_bound"] > 0 for r in result["rows"])
    assert_headroom_and_epoch_two(result)


def test_ddp_overhead_benchmark_reports_the_ratio() -> None:
    bench = load_script("benchmarks/ddp_overhead.py", "bench_ddp")
    result = bench.main(["--model", "mlp", "--batch-size", "4", "--block", "2", "--rounds", "3", "--cpu"])
    assert result["backend"] == "gloo"
    assert result["ratio_median"] > 0 and result["cpu_ratio_median"] > 0


def test_ddp_scaling_benchmark_reports_each_n_and_compares_with_a_saved_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_script("benchmarks/ddp_scaling.py", "bench_ddp_scaling")
    saved = tmp_path / "baseline.json"
    tiny = ["--model", "mlp", "--ranks", "1,2", "--batch-size", "4", "--warmup", "1", "--steps", "3"]
    result = bench.main([*tiny, "--timeout", "120", "--save", str(saved)])
    assert (result["backend"], result["params"]["model"], result["cpus"] > 0) == ("gloo", "mlp", True)
    assert len(result["load_average_start"]) == len(result["load_average_end"]) == 3
    assert result["plain_1"]["samples_per_second"] > 0 and result["plain_1"]["step_seconds"] > 0
    assert [row["n"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert [r["rank"] for r in row["ranks"]] == list(range(row["n"]))
        assert all(r["samples_per_second"] > 0 and r["step_seconds"] > 0 for r in row["ranks"])
        assert row["samples_per_second"] > 0 and row["step_seconds"] > 0
        assert row["efficiency"] > 0 and row["efficiency_cores_bound"] >= row["efficiency"]
        assert isinstance(row["exposed_comm_seconds"], float)
    assert result["rows"][0]["efficiency"] == 1.0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[2])["rows"][1]["n"] == 2  # cpus/load line, load line, the JSON
    assert json.loads(saved.read_text())["rows"] == result["rows"]

    again = bench.main([*tiny, "--timeout", "120", "--baseline", str(saved)])
    compared = again["baseline"]["rows"]
    assert [row["n"] for row in compared] == [1, 2]
    assert compared[0]["ratio"] == 1.0 and compared[0]["verdict"] == "ok"  # E(1) is 1 by definition
    assert compared[1]["ratio"] > 0 and compared[1]["verdict"] in {"ok", "regression"}
    assert "baseline" in capsys.readouterr().out


def test_ddp_scaling_comparison_flags_a_drop_over_ten_percent() -> None:
    bench = load_script("benchmarks/ddp_scaling.py", "bench_ddp_scaling")
    now = {"rows": [{"n": 1, "efficiency": 1.0}, {"n": 2, "efficiency": 0.5}, {"n": 4, "efficiency": 0.3}]}
    old = {"rows": [{"n": 1, "efficiency": 1.0}, {"n": 2, "efficiency": 0.6}]}
    verdicts = [(row["n"], row["verdict"]) for row in bench.compare(now, old)]
    assert verdicts == [(1, "ok"), (2, "regression"), (4, "no baseline")]
