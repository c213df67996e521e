"""The TrainingJob v1alpha1 spec: its field declarations, typed dataclasses and `load()`.

`api` declares each field once; the CRD is generated from it and `load()` validates with it, applying the
same defaults and rules (schema and CEL) with the same field paths, so the CLI and the operator fail the
same way `kubectl apply` does. Only the managedBy immutability rules, which compare with the stored object,
are admission's alone. The /dev/shm vs memory-limit rule is a CEL rule against sizeLimit or its 256Mi
floor; `load()` also checks it against a larger derived size (`torchjob_core.sizing`), which CEL cannot
compute.
"""

from torchjob_core.spec.api import is_reserved_env
from torchjob_core.spec.errors import FieldError, SpecError
from torchjob_core.spec.loader import load
from torchjob_core.spec.types import (
    JSON,
    Auto,
    Checkpoint,
    CheckpointStorage,
    DataLoader,
    Elastic,
    Metadata,
    Metrics,
    Resources,
    RunPolicy,
    Scheduling,
    SharedMemory,
    Topology,
    TrainingJob,
    TrainingJobSpec,
    template_container,
)

__all__ = [
    "JSON",
    "Auto",
    "Checkpoint",
    "CheckpointStorage",
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
    "Topology",
    "TrainingJob",
    "TrainingJobSpec",
    "is_reserved_env",
    "load",
    "template_container",
]
