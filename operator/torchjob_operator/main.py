"""Entry point: `python -m torchjob_operator` / `torchjob-operator`."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from torchjob_operator import handlers, metrics, settings

EXIT_PORT_IN_USE = 2


def _bind_error(port: int) -> OSError | None:
    """Whether `port` can be bound on all interfaces now (None) or why not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return exc
    return None


def _port_in_use(flag: str, port: int, exc: OSError) -> int:
    """One line naming the port and the flag, instead of a traceback from deep inside a server."""
    why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
    print(f"torchjob-operator: {flag} {port} {why}: free it or pass another {flag}", file=sys.stderr)
    return EXIT_PORT_IN_USE


def main(argv: Sequence[str] | None = None) -> int:
    cfg = settings.from_args(argv)
    runtime = handlers.OperatorRuntime(settings=cfg)
    kopf.configure(verbose=cfg.verbose)
    # Kopf binds the health port only inside kopf.run; checked first so both fail the same way.
    health_error = _bind_error(cfg.health_port) if cfg.health_port else None
    if health_error is not None:
        return _port_in_use("--health-port", cfg.health_port, health_error)
    if cfg.metrics_port:
        try:
            start_http_server(cfg.metrics_port, registry=metrics.REGISTRY)
        except OSError as exc:
            return _port_in_use("--metrics-port", cfg.metrics_port, exc)
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
