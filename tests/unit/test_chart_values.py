"""The chart's values contract without helm: every key documented, the schema strict and in step."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "torchjob"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_]*):")


def undocumented_keys(text: str) -> list[str]:
    """Keys neither preceded by a `# --` comment nor inside a documented parent (helm-docs rules)."""
    missing: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, dotted key, documented)
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = KEY.match(line)
        if not match:
            if not stripped:
                comment = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k, _ in stack), match["key"]])
        documented = any(c.startswith("# --") for c in comment) or any(d for _, _, d in stack)
        is_parent = line.rstrip().endswith(":")
        if not documented and not is_parent:
            missing.append(dotted)
        stack.append((indent, match["key"], documented))
        comment = []
    return missing


def test_every_value_is_documented() -> None:
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_doc_check_catches_a_missing_comment() -> None:
    assert undocumented_keys("a:\n  # -- ok\n  b: 1\n  c: 2\n# -- doc\nd:\n  e: 1\n") == ["a.c"]


def test_defaults_validate_against_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize("path", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name)
def test_scenarios_validate_against_the_schema(path: Path) -> None:
    jsonschema.validate(merged(VALUES, yaml.safe_load(path.read_text()) or {}), SCHEMA)


def closed_objects(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of object schemas with named properties that still accept unknown keys."""
    open_ones = []
    if "properties" in schema and schema.get("additionalProperties") is not False:
        open_ones.append(path or "(root)")
    for name, sub in schema.get("properties", {}).items():
        open_ones += closed_objects(sub, f"{path}.{name}")
    for name, sub in schema.get("definitions", {}).items():
        open_ones += closed_objects(sub, f"#{name}")
    return open_ones


def test_schema_is_strict_everywhere() -> None:
    assert closed_objects(SCHEMA) == []


def test_schema_knows_every_default_key() -> None:
    def keys(values: dict[str, Any], schema: dict[str, Any], prefix: str) -> list[str]:
        unknown = []
        for key, value in values.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None:
                unknown.append(prefix + key)
            elif isinstance(value, dict) and "properties" in sub:
                unknown += keys(value, sub, f"{prefix}{key}.")
        return unknown

    assert keys(VALUES, SCHEMA, "") == []


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ({"replicaCuont": 2}, "replicaCuont"),
        ({"podMonitor": {"enable": True}}, "enable"),
        ({"image": {"pullPolicy": "Sometimes"}}, "Sometimes"),
    ],
)
def test_schema_rejects_typos(override: dict[str, Any], path: str) -> None:
    with pytest.raises(jsonschema.ValidationError, match=path):
        jsonschema.validate(merged(VALUES, override), SCHEMA)
