"""Which failures restart the gang and how long to wait first (docs/contracts.md "Exit codes").

Pure: no clock, no client. The same rules as the CLI's local run.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from torchjob_core import constants


class Verdict(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


def classify_exit(code: int, *, retryable: Collection[int], permanent: Collection[int]) -> Verdict:
    """Permanent codes win over retryable ones; a code in neither list is permanent for 1-127 (the
    program's own failure) and retryable for 128-255 (killed by a signal)."""
    if code == 0:
        return Verdict.SUCCEEDED
    if code in permanent:
        return Verdict.PERMANENT
    if code in retryable:
        return Verdict.RETRYABLE
    return Verdict.RETRYABLE if code >= 128 else Verdict.PERMANENT


def replaceable_alone(elastic_min_nodes: int | None, lost: Collection[int], running: Collection[int]) -> bool:
    """Whether an elastic job goes on while its `lost` nodes are replaced one by one.

    Node 0 hosts the c10d rendezvous, so it must be among the survivors, and they must number at least
    `minNodes`; a fixed-size job (`elastic_min_nodes` None) always restarts the whole gang.
    """
    if elastic_min_nodes is None or not lost or 0 in lost:
        return False
    survivors = set(running) - set(lost)
    return 0 in survivors and len(survivors) >= elastic_min_nodes


def backoff_seconds(restarts_so_far: int, base: float) -> float:
    """Delay before gang restart number `restarts_so_far` (1-based): base doubled each time, capped."""
    exponent = max(restarts_so_far - 1, 0)
    # Bound the exponent so a huge restart count cannot overflow the float.
    return float(min(base * (2 ** min(exponent, 32)), constants.MAX_BACKOFF_SECONDS))
