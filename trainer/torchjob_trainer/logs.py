"""Rank-prefixed log lines and the machine-readable progress line.

Every line: `<UTC time> <LEVEL> [<namespace>/<job> rank R/W local L node N] <logger>: <message>`.
Rank 0 prints a progress line every `--log-every` steps:

    torchjob-progress {"step": 40, "total_steps": 100, "epoch": 1, "epochs": 2, ...}

Parsers find the token `torchjob-progress ` anywhere in a line (torchrun may prefix lines) and read
the rest of the line as one JSON object; docs/trainer.md lists its keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

PROGRESS_TOKEN = "torchjob-progress"
SUMMARY_TOKEN = "torchjob-summary"


def setup(
    level: str, *, namespace: str, job: str, rank: int, world: int, local_rank: int, node_rank: int
) -> None:
    prefix = f"[{namespace}/{job} rank {rank}/{world} local {local_rank} node {node_rank}]"
    fmt = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ %(levelname)s {prefix} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    fmt.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def progress_line(fields: dict[str, Any]) -> str:
    return f"{PROGRESS_TOKEN} {json.dumps(fields, sort_keys=True)}"


def parse_progress(line: str) -> dict[str, Any] | None:
    """The progress fields of a log line, or None if it is not a progress line."""
    idx = line.find(PROGRESS_TOKEN + " ")
    if idx < 0:
        return None
    try:
        value = json.loads(line[idx + len(PROGRESS_TOKEN) + 1 :])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
