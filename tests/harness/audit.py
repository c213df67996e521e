"""The apiserver's audit log, for counting the API requests a client makes (e.g. per TrainingJob).

`ControlPlane(audit=True)` makes the apiserver write one JSON line per completed request at level
Metadata (who, verb, resource, namespace, name, status code). Reading it is pure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request (at ResponseComplete; long watches also at ResponseStarted).
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


def events(path: Path) -> Iterator[dict[str, Any]]:
    """Audit events in the order written; a line cut off by a concurrent write is skipped."""
    with path.open() as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def count_requests(lines: Iterable[dict[str, Any]], username: str) -> Counter[tuple[str, str]]:
    """(verb, resource[/subresource]) -> number of requests by `username`, one per request."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in lines:
        if event.get("user", {}).get("username") != username or event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", event.get("requestURI", ""))
        if sub := ref.get("subresource"):
            resource = f"{resource}/{sub}"
        counts[(event.get("verb", ""), resource)] += 1
    return counts
