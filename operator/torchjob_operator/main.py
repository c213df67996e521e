"""Entry point: `python -m torchjob_operator` / `torchjob-operator`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from torchjob_operator import handlers, metrics, settings


def main(argv: Sequence[str] | None = None) -> int:
    cfg = settings.from_args(argv)
    runtime = handlers.OperatorRuntime(settings=cfg)
    kopf.configure(verbose=cfg.verbose)
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, registry=metrics.REGISTRY)
    metrics.set_phases({})
    kopf.run(
        standalone=cfg.standalone,
        peering_name=cfg.peering,
        priority=cfg.priority,
        namespaces=cfg.namespaces,
        clusterwide=not cfg.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        memo=runtime.memo(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
