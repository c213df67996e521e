"""Checkpoint file names: `ckpt-<global step, 9 digits>.pt` in the checkpoint dir.

The trainer writes and resumes from these files; the CLI's local run names the one a rerun resumes
from. Both take the names from here, and reading a step from a name needs no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_RE = re.compile(r"^ckpt-(\d+)\.pt$")
TEMP_GLOB = "ckpt-*.tmp"


def file_name(global_step: int) -> str:
    return f"ckpt-{global_step:09d}.pt"


def listed(directory: Path) -> list[tuple[int, Path]]:
    """(global step, path) of every checkpoint file in `directory`, newest first; none if it is missing."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME_RE.match(p.name))]
    return sorted(found, reverse=True)
