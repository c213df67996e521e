"""Test tiers by folder.

Every test gets the marker of the folder it lives in, so `pytest -m unit` or `-m "not cluster"` select
tiers without decorating each test. Tiers that need hardware or a machine-wide node (GPU, the
real-node tier, kind) run only when asked (`make test` asks for the real node) and skip with a reason.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from harness import tools

TIER_BY_FOLDER = {
    "unit": "unit",
    "cluster": "cluster",
    "torchrun": "torchrun",
    "tools": "tools",
    "e2e": "node",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kind", action="store_true", help="run tests/e2e on KUBECONFIG (kind or real), not the real node"
    )
    parser.addoption(
        "--node", action="store_true", help="run tests/e2e on a real node started on this machine (opt-in)"
    )
    parser.addoption("--gpu", action="store_true", help="run tests that need an NVIDIA GPU")
    parser.addoption("--slow", action="store_true", help="run benchmarks and long tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gates = {
        "gpu": (config.getoption("--gpu"), "needs an NVIDIA GPU: pass --gpu on a GPU machine"),
        "slow": (config.getoption("--slow"), "slow tier is opt-in: pass --slow"),
        # Asked for, not implied: it takes the machine's one node slot (ports 10250 and 53, cni0) and root.
        "node": (
            config.getoption("--node") or config.getoption("--kind"),
            "the real-node tier runs with --node (`make test` passes it), or --kind for KUBECONFIG",
        ),
    }
    for item in items:
        parts = item.path.parts
        if "tests" in parts:
            idx = len(parts) - 1 - parts[::-1].index("tests")
            if idx + 1 < len(parts) and parts[idx + 1] in TIER_BY_FOLDER:
                item.add_marker(TIER_BY_FOLDER[parts[idx + 1]])
        for marker, (enabled, reason) in gates.items():
            if marker in item.keywords and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def gen_manifests() -> ModuleType:
    return tools.load_gen_manifests()


def _require(path: str | None, name: str) -> str:
    if path is None:
        pytest.skip(f"{name} is not installed: run hack/tools.sh")
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _require(tools.find_helm(), "helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require(tools.find_binary("promtool"), "promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _require(tools.find_binary("prometheus"), "prometheus")
