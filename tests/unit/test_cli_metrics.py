"""Reading a rank's Prometheus endpoint: the text format as prometheus_client serves it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from torchjob_cli.metrics import Scraper, parse_text, rank_snapshot


def exposition(step: float, rate: float, wait: float, loss: float) -> str:
    r = CollectorRegistry()
    labels = {"job": "j", "rank": "3", "local_rank": "1", "node_rank": "1"}
    for name, value in [
        ("step", step),
        ("samples_per_second", rate),
        ("data_wait_ratio", wait),
        ("loss", loss),
        ("epoch", 1),
    ]:
        Gauge(f"torchjob_trainer_{name}", "doc", list(labels), registry=r).labels(**labels).set(value)
    Counter("torchjob_trainer_samples", "doc", list(labels), registry=r).labels(**labels).inc(640)
    return generate_latest(r).decode()


def test_parse_text_reads_names_labels_values() -> None:
    samples = parse_text(exposition(20, 800.5, 0.25, 2.5))
    by_name = {s.name: s for s in samples}
    assert by_name["torchjob_trainer_samples_total"].value == 640
    assert by_name["torchjob_trainer_step"].labels["rank"] == "3"


def test_snapshot_of_a_training_rank() -> None:
    p = rank_snapshot(parse_text(exposition(20, 800.5, 0.25, 2.5)), rank=9, now=1.0)
    assert p is not None
    assert (p.rank, p.step, p.epoch, p.samples_per_s, p.data_wait_ratio, p.loss) == (
        3,
        20,
        1,
        800.5,
        0.25,
        2.5,
    )


def test_no_snapshot_before_training_and_no_rate_before_a_window() -> None:
    assert rank_snapshot(parse_text(exposition(0, 0, 0, 0)), rank=3, now=1.0) is None
    p = rank_snapshot(parse_text(exposition(3, 0, 0, 2.0)), rank=3, now=1.0)
    assert p is not None and p.samples_per_s is None and p.data_wait_ratio is None


def test_scraper_skips_unreachable_ranks() -> None:
    seen = []

    def get(url: str) -> str:
        if url.endswith("1"):
            raise ConnectionRefusedError(url)
        return exposition(5, 10, 0.5, 1)

    s = Scraper({0: "u0", 1: "u1"}, seen.append, get=get)
    s.scrape_once()
    assert [p.step for p in seen] == [5] and s.scrapes_ok == 1
