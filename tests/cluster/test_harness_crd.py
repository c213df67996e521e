"""The CRD path of the `crd` fixture (server-side apply, wait for Established), on a sample CRD."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from harness.kubectl import Kubectl, apply_crds

SAMPLE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "samples.harness.torchjob.dev"},
    "spec": {
        "group": "harness.torchjob.dev",
        "names": {"plural": "samples", "singular": "sample", "kind": "Sample"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_apply_crds_waits_until_the_api_serves_it(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    manifest = tmp_path / "crd.yaml"
    manifest.write_text(yaml.safe_dump(SAMPLE_CRD))
    try:
        (doc,) = apply_crds(kubectl, manifest)
        assert doc["metadata"]["name"] == "samples.harness.torchjob.dev"
        apply_crds(kubectl, manifest)  # re-applying is a no-op, as for a session fixture re-run
        sample = {"apiVersion": "harness.torchjob.dev/v1", "kind": "Sample", "metadata": {"name": "s"}}
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({**sample, "spec": {"size": 2}}))
        rejected = kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps({**sample, "spec": {"size": 0}}),
            check=False,
        )
        assert rejected.returncode != 0 and "spec.size" in rejected.stderr
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", f"--filename={manifest}")
