"""Kubeconfig documents for the local control plane (pure: build the dict, then write it)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

CLUSTER_NAME = "torchjob-local"


def token_kubeconfig(
    server: str, ca_pem: bytes, user: str, token: str, namespace: str = "default"
) -> dict[str, Any]:
    """A kubeconfig that trusts `ca_pem` and authenticates with a bearer token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": f"{user}@{CLUSTER_NAME}",
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace},
            }
        ],
        "current-context": f"{user}@{CLUSTER_NAME}",
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    """Writes owner-readable only: it holds a credential."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
