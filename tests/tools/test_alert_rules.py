"""The chart's alerting rules (files/alerts/torchjob-alerts.yaml) as the chart renders them: `promtool check
rules` accepts them, `promtool test rules` (tests/tools/data/torchjob-alerts-test.yaml) fires every alert
after its `for` and not in the healthy series, and every metric they read is one torchjob exports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from .test_dashboard_queries import exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchjob"
UNIT_TESTS = Path(__file__).parent / "data" / "torchjob-alerts-test.yaml"
RULES_FILE = "torchjob-alerts.rules.yaml"  # the name UNIT_TESTS' rule_files gives the rendering
ENABLED = ["prometheusRule.enabled=true", "serviceMonitor.enabled=true"]
SEVERITIES = {"critical", "warning", "info"}
# Prometheus' own series the rules read besides torchjob's.
PROMETHEUS_SERIES = {"up"}


def rule_groups(chart: Any, *sets: str, values: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """spec.groups of the PrometheusRule the chart renders for release tj in torchjob-system."""
    docs = chart.render(*values, sets=[*ENABLED, *sets])
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return list(rule["spec"]["groups"])


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def write_rules(groups: list[dict[str, Any]], folder: Path) -> Path:
    """A plain Prometheus rules file, next to a copy of the unit tests that load it."""
    path = folder / RULES_FILE
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return path


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def groups(chart: Any) -> list[dict[str, Any]]:
    return rule_groups(chart)


def test_promtool_checks_the_rendered_rules(
    groups: list[dict[str, Any]], promtool: str, tmp_path: Path
) -> None:
    proc = promtool_run(promtool, "check", "rules", str(write_rules(groups, tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts(groups))} rules found" in proc.stdout


def test_promtool_unit_tests_of_every_alert_pass(
    groups: list[dict[str, Any]], promtool: str, tmp_path: Path
) -> None:
    write_rules(groups, tmp_path)
    proc = promtool_run(promtool, "test", "rules", str(tmp_path / UNIT_TESTS.name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_fail_on_a_changed_threshold(chart: Any, promtool: str, tmp_path: Path) -> None:
    """The unit tests read the rules' thresholds: a straggler at half the median no longer fires at 0.4."""
    # A file, as helm's --set reads 0.4 as a string (the schema wants a number; --set-json works too).
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"prometheusRule": {"rules": {"stragglerRatio": 0.4}}}))
    write_rules(rule_groups(chart, values=(values,)), tmp_path)
    proc = promtool_run(promtool, "test", "rules", str(tmp_path / UNIT_TESTS.name))
    assert proc.returncode != 0
    assert "alertname: TrainingRankStraggler" in proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_quiet(groups: list[dict[str, Any]]) -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(alerts(groups))
    assert names == fired, f"no firing case: {sorted(names - fired)}; unknown: {sorted(fired - names)}"
    assert names <= quiet, f"no quiet case: {sorted(names - quiet)}"


def test_every_alert_has_for_severity_and_says_where(groups: list[dict[str, Any]]) -> None:
    assert [g["name"] for g in groups] == ["torchjob.operator", "torchjob.training"]
    for name, rule in alerts(groups).items():
        assert rule["for"], name
        assert rule["labels"]["severity"] in SEVERITIES, name
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "namespace" in text, name
        # Per-job alerts name the TrainingJob; the operator's series have no job name (docs say so).
        if "torchjob_trainer_" in rule["expr"]:
            assert "$labels.job" in text and "$labels.namespace" in text, name


def exposition() -> str:
    """What the operator and a (CPU) trainer rank export, with the series their start-up creates."""
    from torchjob_operator import metrics as operator_metrics
    from torchjob_trainer import metrics as trainer_metrics

    operator_metrics.set_phases({})
    operator_metrics.namespace_seen("default")
    trainer = trainer_metrics.TrainerMetrics(trainer_metrics.RankLabels("j", 0, 0, 0), cuda=False)
    return generate_latest(operator_metrics.REGISTRY).decode() + generate_latest(trainer.registry).decode()


def test_every_metric_the_alerts_read_is_exported(groups: list[dict[str, Any]]) -> None:
    text = exposition()
    exported = exported_names(text)
    named = {m for rule in alerts(groups).values() for m in metric_names(rule["expr"])}
    assert "torchjob_trainer_samples_total" in named and "torchjob_operator_restarts_total" in named
    assert named - PROMETHEUS_SERIES <= exported, (
        f"not exported: {sorted(named - PROMETHEUS_SERIES - exported)}"
    )
    # The label values the rules select on are ones the operator writes.
    for needle in ('outcome="Failed"', 'phase="Pending"', 'reason="retryable_exit"', 'reason="disruption"'):
        assert needle in text, needle


def test_disabled_alerts_are_left_out_and_the_schema_knows_every_name(chart: Any) -> None:
    names = set(alerts(rule_groups(chart)))
    schema = json.loads((CHART / "values.schema.json").read_text())
    enum = schema["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    assert set(enum) == names
    left = alerts(
        rule_groups(chart, "prometheusRule.disabled={TrainingJobStuckPending,TorchjobOperatorDown}")
    )
    assert set(left) == names - {"TrainingJobStuckPending", "TorchjobOperatorDown"}
    assert "prometheusRule/disabled" in chart.render_error([*ENABLED, "prometheusRule.disabled={typo}"])
