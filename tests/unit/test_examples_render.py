"""Every example loads with spec.load and renders a Service, pods and (when asked) a PodGroup."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torchjob_core import spec
from torchjob_core.render import meta, podgroup, pods, service

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_the_three_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"cpu-gloo-2node.yaml", "gpu-nccl.yaml", "elastic.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_renders(path: Path) -> None:
    job = spec.load(yaml.safe_load(path.read_text()))
    svc = service.render_service(job)
    assert svc["spec"]["selector"] == meta.selector(job)
    rendered = [pods.render_pod(job, i, 0) for i in range(job.spec.nodes)]
    assert len({p["metadata"]["name"] for p in rendered}) == job.spec.nodes
    for i, pod in enumerate(rendered):
        assert pod["spec"]["subdomain"] == svc["metadata"]["name"]
        assert len(pod["spec"]["hostname"]) <= 63
        assert pod["metadata"]["labels"].items() >= meta.selector(job).items()
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env.get("PET_NODE_RANK", str(i)) == str(i)
    group = podgroup.render_podgroup(job)
    assert (group is not None) == job.spec.scheduling.gang


def test_gpu_example_is_nccl_with_eight_ranks_per_node() -> None:
    job = spec.load(yaml.safe_load(EXAMPLES[[p.name for p in EXAMPLES].index("gpu-nccl.yaml")].read_text()))
    assert (job.backend, job.nproc_per_node, job.spec.nodes) == ("nccl", 8, 2)
