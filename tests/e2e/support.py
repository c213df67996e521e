"""kubectl and polling helpers of the e2e tier (imported as `e2e.support`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.nodecluster import NodeCluster

TIMEOUT = float(os.environ.get("TORCHJOB_E2E_TIMEOUT", "900"))


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        flags = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        proc = subprocess.run(
            [self.binary, *flags, *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


@dataclass
class Cluster:
    """What the e2e tests run against: the real node of this machine, or --kind's kubeconfig."""

    kubectl: Kubectl
    kubeconfig: Path
    operator_namespace: str
    real_node: bool
    # The trainer image built from this checkout (its content-hash tag); the examples name :<version>,
    # which the node's containerd also maps to this build.
    trainer_image: str | None = None
    node_cluster: NodeCluster | None = field(default=None, repr=False)
    # A Prometheus (from the Prometheus Operator) that selects the chart's monitors: harness.monitoring.
    prometheus: bool = False


def progress(message: str) -> None:
    """Printed at once (run with -s, as hack/kind-e2e.sh does) so a long wait shows where it is."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
