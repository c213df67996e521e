"""The container's termination message: the one line an operator reads from `kubectl describe` and status.

Kubernetes copies the file (`terminationMessagePath`, default `/dev/termination-log`) into the trainer
container's `state.terminated.message`, at most 4096 bytes; the operator carries it into
`status.lastFailure.message` and the job's condition.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

MAX_BYTES = 4096  # the kubelet keeps no more


def write(path: str | None, message: str) -> None:
    """Overwrite `path` with `message`, never creating it: in a pod the kubelet has mounted the file, and a
    local run (no such file) must not litter `/dev`. Best effort: failing costs the message, not the code."""
    if not path:
        return
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_TRUNC), "wb") as fh:
            fh.write(message.encode()[:MAX_BYTES])
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)
