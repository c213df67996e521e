"""Why the API server refused to create a pod, as a condition reason (pure: unit-tested on real messages).

Admission answers 403 Forbidden for ResourceQuota, LimitRange, Pod Security, ValidatingAdmissionPolicy
and webhook denials (a policy may also answer 422), and 422 Invalid for a pod that fails validation,
which for our rendered pods means the user's template. The message is the API's own, so the reason only
needs to sort it; anything unrecognised keeps the generic reason of its status code.
"""

from __future__ import annotations

import re
from typing import Final

# Checked in order: the first pattern found in the API's message names the cause.
_CAUSES: Final = (
    (re.compile(r"exceeded quota"), "QuotaExceeded"),
    (re.compile(r"violates PodSecurity"), "PodSecurity"),
    (re.compile(r"usage per (Container|Pod)|limit to request ratio per|LimitRange"), "LimitRange"),
    (re.compile(r"admission webhook .* denied"), "AdmissionWebhookDenied"),
    (re.compile(r"ValidatingAdmissionPolicy .* denied"), "AdmissionPolicyDenied"),
)
FORBIDDEN: Final = "PodCreateForbidden"
INVALID: Final = "InvalidPodTemplate"
# What a pod create can answer that retrying the same body will not fix by itself.
REJECTION_CODES: Final = frozenset({400, 403, 422})


def reason(code: int, message: str) -> str:
    """The condition reason for a rejected pod create (`code` is the HTTP status)."""
    for pattern, cause in _CAUSES:
        if pattern.search(message):
            return cause
    return INVALID if code in (400, 422) else FORBIDDEN


def backoff_seconds(rejections: int, base: float = 5.0, cap: float = 300.0) -> float:
    """Delay before creating again after `rejections` rejected passes in a row: 5, 10, 20, ... 300 s."""
    return float(min(base * 2 ** max(rejections - 1, 0), cap))
