"""Read the trainer's per-rank Prometheus endpoints: samples from prometheus_client's parser, a scraper.

Only the gauges the CLI shows are read (names from docs/contracts.md "Trainer outputs").
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families
from torchjob_core import constants

from torchjob_cli.progress import Progress

PREFIX = constants.TRAINER_METRIC_PREFIX


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_text(text: str) -> list[Sample]:
    """Every sample of a text exposition; a malformed body reads as no samples (a rank mid-restart)."""
    try:
        return [
            Sample(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except ValueError:
        return []


def rank_snapshot(samples: list[Sample], *, rank: int, now: float) -> Progress | None:
    """The gauges of one rank's endpoint as a Progress point (None before the first step)."""
    values = {s.name.removeprefix(PREFIX): s.value for s in samples if s.name.startswith(PREFIX)}
    if not values.get("step"):
        return None  # not training yet: the gauges still hold their zero defaults
    if not values.get("samples_per_second"):
        # No throughput window has closed yet: its ratio is a default too, not a measurement.
        values.pop("samples_per_second", None)
        values.pop("data_wait_ratio", None)
    labelled = next((s.labels.get("rank") for s in samples if s.name == PREFIX + "step"), None)

    def get(key: str) -> float | None:
        return values.get(key)

    epoch = get("epoch")
    return Progress(
        rank=int(labelled) if labelled is not None and labelled.isdigit() else rank,
        time=now,
        step=int(values["step"]),
        epoch=int(epoch) if epoch is not None else None,
        samples_per_s=get("samples_per_second"),
        data_wait_ratio=get("data_wait_ratio"),
        loss=get("loss"),
    )


def fetch(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return body.decode("utf-8", "replace")


class Scraper:
    """Polls every rank's endpoint on a thread; each reading goes to `on_point`."""

    def __init__(
        self,
        urls: Mapping[int, str],
        on_point: Callable[[Progress], None],
        *,
        interval: float = 1.0,
        get: Callable[[str], str] = fetch,
    ) -> None:
        self.urls = dict(urls)
        self.on_point = on_point
        self.interval = interval
        self.get = get
        self.scrapes_ok = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torchjob-scraper", daemon=True)

    def __enter__(self) -> Scraper:
        if self.urls:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def scrape_once(self) -> None:
        for rank, url in self.urls.items():
            try:
                text = self.get(url)
            except (OSError, urllib.error.URLError):
                continue  # not up yet, or already gone
            point = rank_snapshot(parse_text(text), rank=rank, now=time.monotonic())
            if point is not None:
                self.scrapes_ok += 1
                self.on_point(point)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape_once()
