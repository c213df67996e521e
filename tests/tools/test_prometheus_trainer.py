"""A real Prometheus scrapes a local 2-rank run; PromQL gives job throughput and per-rank data wait."""

from __future__ import annotations

import subprocess
from typing import Any

from harness.polling import eventually
from torchjob_cli import cluster
from torchrun.trainer_procs import scrape

THROUGHPUT = 'sum by (job) (rate(torchjob_trainer_samples_total{{job="{job}"}}[5s]))'
DATA_WAIT = (
    'sum by (job, rank) (rate(torchjob_trainer_data_wait_seconds_total{{job="{job}"}}[5s]))'
    ' / sum by (job, rank) (rate(torchjob_trainer_step_seconds_total{{job="{job}"}}[5s]))'
)


def test_both_ranks_are_scraped_with_the_trainer_job_label(prometheus: Any, trainer_run: Any) -> None:
    def up() -> list[dict[str, Any]]:
        result = prometheus.query('up{job="torchjob-trainers"} == 1')
        return result if len(result) == 2 else []

    eventually(up, 60, "both rank targets up")
    series = eventually(lambda: prometheus.query("torchjob_trainer_samples_total"), 60, "trainer samples")
    assert sorted(s["metric"]["rank"] for s in series) == ["0", "1"]
    # honor_labels: `job` is the TrainingJob's name, not the scrape job's.
    assert {s["metric"]["job"] for s in series} == {trainer_run.job}


def test_promql_gives_job_throughput(prometheus: Any, trainer_run: Any) -> None:
    def both_ranks_training() -> list[dict[str, Any]]:
        rates = prometheus.query(f"rate(torchjob_trainer_samples_total{{job='{trainer_run.job}'}}[5s]) > 0")
        return rates if len(rates) == 2 else []

    eventually(both_ranks_training, 60, "a positive sample rate on both ranks")
    (series,) = prometheus.query(THROUGHPUT.format(job=trainer_run.job))
    assert series["metric"] == {"job": trainer_run.job}
    assert float(series["value"][1]) > 0


def test_promql_gives_per_rank_data_wait_ratio(prometheus: Any, trainer_run: Any) -> None:
    query = DATA_WAIT.format(job=trainer_run.job)

    def both_ranks() -> list[dict[str, Any]]:
        result = prometheus.query(query)
        return result if len(result) == 2 else []

    result = eventually(both_ranks, 60, f"two series of {query}")
    assert sorted(s["metric"]["rank"] for s in result) == ["0", "1"]
    for series in result:
        assert 0.0 <= float(series["value"][1]) <= 1.0, series


def test_promtool_accepts_a_real_trainer_scrape(promtool: str, trainer_run: Any) -> None:
    for port in trainer_run.ports:
        text = scrape(port)
        assert text, f"no scrape on :{port}"
        proc = subprocess.run(
            [promtool, "check", "metrics"],
            check=False,
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_top_reads_one_namespaces_ranks_from_prometheus(prometheus: Any, trainer_run: Any) -> None:
    """`torchjob top --prometheus URL` runs these instant queries for the job in its namespace."""

    def both_ranks() -> list[Any]:
        rows = cluster.query_prometheus(prometheus.url, trainer_run.job, trainer_run.namespace)
        return rows if len(rows) == 2 and all(r.samples_per_s for r in rows) else []

    rows = eventually(both_ranks, 60, "both ranks in top's Prometheus queries")
    assert sorted(r.rank for r in rows) == [0, 1]
    assert all(r.step and r.data_wait_ratio is not None for r in rows)
    # A same-named job in another namespace is not mixed in.
    assert cluster.query_prometheus(prometheus.url, trainer_run.job, "team-b") == []
