"""Every TORCHJOB_* env the renderer emits is a trainer flag (`TORCHJOB_<FLAG>`) or the node's identity
(which every container gets), per docs/contracts.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torchjob_core import spec
from torchjob_core.render import env, pods
from torchjob_trainer import config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_declared_trainer_env_are_trainer_flags() -> None:
    assert set(env.TRAINER_ENV_NAMES) <= config.env_names()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rendered_torchjob_env_are_trainer_flags(path: Path) -> None:
    job = spec.load(yaml.safe_load(path.read_text()))
    container = pods.render_pod(job, 0, 0)["spec"]["containers"][0]
    emitted = {e["name"] for e in container["env"] if e["name"].startswith("TORCHJOB_")}
    declared = set(env.TRAINER_ENV_NAMES) | set(env.NODE_ENV_NAMES)
    always = declared - set(env.OPTIONAL_TRAINER_ENV_NAMES)
    assert always <= emitted <= declared
    assert emitted - set(env.NODE_ENV_NAMES) <= config.env_names()


def test_the_trainer_reads_its_name_from_the_node_env() -> None:
    assert {env.TORCHJOB_JOB_NAME, env.TORCHJOB_NAMESPACE} <= set(env.NODE_ENV_NAMES) & config.env_names()


def test_contract_table_lists_every_emitted_name() -> None:
    contracts = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text()
    for name in (*env.NODE_ENV_NAMES, *env.TRAINER_ENV_NAMES):
        assert f"`{name}`" in contracts
