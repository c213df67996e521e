"""Fixtures for the tools tier: the real helm, promtool and prometheus binaries.

hack/tools.sh installs them (helm into a cache outside the repo). A missing binary skips the tests
that need it, with the command that installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchjob"


class Chart:
    """Runs the real helm against charts/torchjob."""

    def __init__(self, helm: str) -> None:
        self.helm = helm

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.helm, *args], capture_output=True, text=True, check=check, timeout=120)

    def template_args(self, values: list[Path], sets: list[str], namespace: str) -> list[str]:
        args = ["template", "tj", str(CHART), "--namespace", namespace]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def render(
        self, *values: Path, sets: list[str] | None = None, namespace: str = "torchjob-system"
    ) -> list[dict[str, Any]]:
        out = self.run(*self.template_args(list(values), sets or [], namespace)).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def render_error(self, sets: list[str]) -> str:
        """stderr of a render that must fail."""
        proc = self.run(*self.template_args([], sets, "torchjob-system"), check=False)
        assert proc.returncode != 0, f"helm template accepted {sets}"
        return proc.stderr


@pytest.fixture(scope="session")
def chart(helm: str) -> Chart:
    return Chart(helm)


TRAINER_JOB = "prom-e2e"
# The namespace label the chart's PodMonitor puts on every trainer target (Prometheus Operator does).
TRAINER_NAMESPACE = "team-a"


@dataclass(frozen=True)
class TrainerRun:
    """A local 2-rank run (`torchjob-launch --standalone --nproc-per-node 2`) serving per-rank metrics."""

    job: str
    ports: tuple[int, int]
    proc: Any
    namespace: str = TRAINER_NAMESPACE  # the label Prometheus puts on its targets


# Package scope (tests/tools/__init__.py): the run stops with this tier, not at the end of the session.
@pytest.fixture(scope="package")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainerRun]:
    from harness.ports import free_port
    from torchrun.trainer_procs import LAUNCH, running, scrape_while_training, trainer_env

    tmp = tmp_path_factory.mktemp("trainer")
    port = free_port(span=2)
    env = trainer_env(
        TORCHJOB_METRICS_PORT=str(port), TORCHJOB_JOB_NAME=TRAINER_JOB, TORCHJOB_NUM_WORKERS="1"
    )
    # Long enough never to finish while the tests look at it; the fixture kills the process group.
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train", "--epochs", "1000"]
    cmd += [
        "--steps-per-epoch",
        "1000",
        "--batch-size",
        "16",
        "--sample-cost-us",
        "200",
        "--log-every",
        "500",
    ]
    with running(cmd, env, tmp / "trainer.log") as proc:
        for rank in (0, 1):
            scrape_while_training(port + rank, proc)
        yield TrainerRun(TRAINER_JOB, (port, port + 1), proc)


class Prometheus:
    """A real Prometheus server started for the test session."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        if body["status"] != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])


@contextlib.contextmanager
def run_prometheus(prometheus_bin: str, config: dict[str, Any], tmp: Path) -> Iterator[Prometheus]:
    """A real Prometheus with this configuration, ready to answer queries."""
    from harness.polling import eventually
    from harness.ports import free_port
    from torchrun.trainer_procs import running

    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cmd = [
        prometheus_bin,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with running(cmd, dict(os.environ), tmp / "prometheus.log") as proc:
        server = Prometheus(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        eventually(ready, 60, "prometheus /-/ready", watch=proc)
        yield server


SCRAPE_EVERY_SECOND = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}


@pytest.fixture(scope="package")
def prometheus(
    prometheus_bin: str, trainer_run: TrainerRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    # As the chart's PodMonitor: honor_labels (the trainer's `job` label, the TrainingJob name, wins)
    # and a namespace label on each target.
    config = {
        "global": SCRAPE_EVERY_SECOND,
        "scrape_configs": [
            {
                "job_name": "torchjob-trainers",
                "honor_labels": True,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{p}" for p in trainer_run.ports],
                        "labels": {"namespace": trainer_run.namespace},
                    }
                ],
            }
        ],
    }
    with run_prometheus(prometheus_bin, config, tmp_path_factory.mktemp("prometheus")) as server:
        yield server


#: The operator's own namespace: the label the chart's ServiceMonitor puts on its target.
OPERATOR_NAMESPACE = "torchjob-system"


@pytest.fixture
def operator_prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus scraping the operator's metrics registry, served from this process, as the
    chart's ServiceMonitor does: honor_labels, and the operator's namespace on the target."""
    from harness.ports import free_port
    from prometheus_client import start_http_server
    from torchjob_operator import metrics

    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    config = {
        "global": SCRAPE_EVERY_SECOND,
        "scrape_configs": [
            {
                "job_name": "torchjob-operator",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": OPERATOR_NAMESPACE}}
                ],
            }
        ],
    }
    try:
        with run_prometheus(prometheus_bin, config, tmp_path) as server:
            yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
