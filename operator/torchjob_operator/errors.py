"""Errors the API layer (`k8s`) raises and the actuator (`actuate`) turns into status: a leaf module, so the
API layer depends on nothing above it."""

from __future__ import annotations

from typing import ClassVar

from torchjob_core import reasons


class ApiUnavailableError(RuntimeError):
    """An API the job's pods depend on is not served; `reason` says which to the user."""

    reason: ClassVar[reasons.Reason]


class PodGroupUnavailableError(ApiUnavailableError):
    """The chosen gang scheduler's PodGroup API is not served (its CRD is not installed)."""

    reason = reasons.GANG_SCHEDULER_MISSING


class ClaimsUnavailableError(ApiUnavailableError):
    """resource.k8s.io/v1 is not served (Kubernetes before 1.34, or DRA turned off)."""

    reason = reasons.DEVICE_CLAIMS_MISSING


class PodRejectedError(RuntimeError):
    """The API server refused a pod create (quota, LimitRange, Pod Security, a policy, an invalid pod)."""

    def __init__(self, pod: str, code: int, message: str) -> None:
        super().__init__(f"pod {pod}: {code}: {message}")
        self.pod, self.code, self.message = pod, code, message
