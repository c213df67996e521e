"""Admission rules shared by spec.load and the CRD: patterns, size limits and error messages.

The CRD (`torchjob_core.crd`) builds its schema and CEL messages from these, so both reject a
manifest with the same words.
"""

from __future__ import annotations

from typing import Final

from torchjob_core import constants

# `<dns-subdomain>/<name>`, the shape of an extended resource name.
GPU_RESOURCE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
    r"/([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
# `<domain>/<path>`, as Kueue's MultiKueue (`kueue.x-k8s.io/multikueue`) and the batch Job API expect.
MANAGED_BY_PATTERN: Final = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
)
MAX_MANAGED_BY_LENGTH: Final = 63
# One interface name or a comma-separated list: what both NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME take.
NETWORK_INTERFACE_PATTERN: Final = r"^[A-Za-z0-9_.:@-]+(,[A-Za-z0-9_.:@-]+)*$"
MAX_NETWORK_INTERFACE_LENGTH: Final = 256
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
ABS_PATH_PATTERN: Final = r"^/"

# List sizes: they bound the CEL cost estimate at admission, so spec.load enforces the same.
MAX_ENV: Final = 256
MAX_VOLUMES: Final = 128
MAX_ARGS: Final = 1024
MAX_EXIT_CODES: Final = 255
MAX_TEMPLATE_CONTAINERS: Final = 32
MAX_RESOURCES: Final = 32
MAX_NAME_LENGTH: Final = 253
MAX_STRING_LENGTH: Final = 4096
MAX_QUANTITY_LENGTH: Final = 64

# Messages of the CEL rules (the apiserver prefixes them with the field path).
RESERVED_MSG: Final = (
    "is reserved: torchjob sets PET_*, TORCHJOB_*, MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, "
    "LOCAL_WORLD_SIZE, GROUP_RANK and TORCH_DISABLE_SHARE_RDZV_TCP_STORE itself"
)
RESERVED_VOLUME_MSG: Final = "is reserved for the volumes torchjob adds (dshm, torchjob-checkpoints)"
SHM_PATH_MSG: Final = "is reserved: torchjob mounts /dev/shm; size it with spec.sharedMemory.sizeLimit"
MOUNT_MSG: Final = "every volumeMount must name a volume in spec.volumes"
MIN_NODES_MSG: Final = "minNodes must be less than or equal to spec.nodes"
MAX_NODES_MSG: Final = "maxNodes must be greater than or equal to spec.nodes"
EXIT_OVERLAP_MSG: Final = "an exit code must not be in both retryableExitCodes and permanentExitCodes"
GANG_SCHEDULER_MSG: Final = "gangScheduler may only be set when gang is true"
IMAGE_MSG: Final = "image is required unless spec.template.spec.containers[name=trainer].image is set"
MANAGED_BY_IMMUTABLE_MSG: Final = "managedBy is immutable: it cannot be set, changed or removed once created"
NCCL_MSG: Final = "backend nccl needs GPUs: set spec.resources.gpusPerNode or use gloo"


def is_reserved_env(name: str) -> bool:
    """True for env names torchjob sets itself (PET_*, TORCHJOB_*, MASTER_ADDR, RANK, ...)."""
    return name.startswith(constants.RESERVED_ENV_PREFIXES) or name in constants.RESERVED_ENV_NAMES
