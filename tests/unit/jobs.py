"""A TrainingJob loaded from a few spec fields, for renderer tests (job "j" in namespace "ns")."""

from __future__ import annotations

from typing import Any

from torchjob_core import spec


def job_of(**spec_fields: Any) -> spec.TrainingJob:
    return spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {"image": "img:1", **spec_fields},
        }
    )
