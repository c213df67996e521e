"""The headless Service that gives every pod a stable DNS name (`<job>-node-<i>.<job>.<ns>.svc`)."""

from __future__ import annotations

from typing import Any

from torchjob_core import constants
from torchjob_core.render import env, meta
from torchjob_core.spec import TrainingJob


def render_service(job: TrainingJob) -> dict[str, Any]:
    """Headless and publishing not-ready addresses: ranks must resolve node 0 before any pod is Ready."""
    port = env.rdzv_port(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.object_meta(job, meta.service_name(job)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": meta.selector(job),
            "ports": [
                {"name": constants.RDZV_PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}
            ],
        },
    }
