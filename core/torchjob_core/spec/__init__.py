"""The TrainingJob v1alpha1 spec: typed dataclasses and `load()`, which validates a manifest.

`load()` applies the CRD's defaults and enforces every rule the CRD enforces at admission (schema and CEL),
with the same field paths, so the CLI and the operator fail the same way `kubectl apply` does. It also
enforces the /dev/shm vs memory-limit rule (see `torchjob_core.sizing`).
"""

from torchjob_core.spec.errors import FieldError, SpecError
from torchjob_core.spec.loader import load
from torchjob_core.spec.rules import is_reserved_env
from torchjob_core.spec.types import (
    JSON,
    Auto,
    Checkpoint,
    DataLoader,
    Elastic,
    Metadata,
    Metrics,
    Resources,
    RunPolicy,
    Scheduling,
    SharedMemory,
    TrainingJob,
    TrainingJobSpec,
    template_container,
)

__all__ = [
    "JSON",
    "Auto",
    "Checkpoint",
    "DataLoader",
    "Elastic",
    "FieldError",
    "Metadata",
    "Metrics",
    "Resources",
    "RunPolicy",
    "Scheduling",
    "SharedMemory",
    "SpecError",
    "TrainingJob",
    "TrainingJobSpec",
    "is_reserved_env",
    "load",
    "template_container",
]
