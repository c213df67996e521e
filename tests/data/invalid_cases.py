"""Loads tests/data/invalid_manifests.yaml: the invalid TrainingJobs spec.load and the apiserver reject."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TABLE = Path(__file__).with_name("invalid_manifests.yaml")


@dataclass(frozen=True)
class InvalidCase:
    id: str
    field: str
    manifest: dict[str, Any]
    admission: bool


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `patch` into a copy of `base`; None deletes a key, lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_cases() -> list[InvalidCase]:
    table = yaml.safe_load(TABLE.read_text())
    return [
        InvalidCase(
            id=case["id"],
            field=case["field"],
            manifest=merge(table["base"], case["patch"]),
            admission=case.get("admission", True),
        )
        for case in table["cases"]
    ]


def load_valid() -> list[tuple[str, dict[str, Any]]]:
    """Edge cases that spec.load and the apiserver must both accept: (id, manifest)."""
    table = yaml.safe_load(TABLE.read_text())
    return [(case["id"], merge(table["base"], case["patch"])) for case in table.get("valid", [])]


def base_manifest() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(TABLE.read_text())["base"])
