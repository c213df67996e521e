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


# The namespace whose requests the cluster tier's apiserver logs (test_operator_requests.py).
AUDITED_NAMESPACE = "t-audited-requests"


def policy(namespaces: tuple[str, ...] = ()) -> dict[str, Any]:
    """POLICY, or with `namespaces` only the requests in those namespaces (a session's apiserver then
    logs one test's namespace, not every test's)."""
    if not namespaces:
        return POLICY
    rules = [{"level": "Metadata", "namespaces": list(namespaces)}, {"level": "None"}]
    return {**POLICY, "rules": rules}


def events(path: Path) -> Iterator[dict[str, Any]]:
    """Audit events in the order written; a line cut off by a concurrent write is skipped."""
    with path.open() as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


# The operator's own client and Kopf's, as the audit log names them (their User-Agent).
OPERATOR_AGENTS = ("torchjob-operator", "kopf/")


def operator_requests(lines: Iterable[dict[str, Any]], namespace: str) -> Counter[str]:
    """`verb resource[/subresource]` -> requests the operator (its client and Kopf's) made in `namespace`."""
    counts: Counter[str] = Counter()
    for event in lines:
        agent = str(event.get("userAgent", ""))
        if event.get("stage") != "ResponseComplete" or not agent.startswith(OPERATOR_AGENTS):
            continue
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{event.get('verb')} {resource}"] += 1
    return counts


def writes(counts: Counter[str]) -> Counter[str]:
    """The write requests of `operator_requests` (everything but get, list and watch)."""
    return Counter({k: n for k, n in counts.items() if not k.startswith(("get ", "list ", "watch "))})


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
