"""charts/torchjob/README.md is up to date, and hack/gen-chart-readme.py enforces the values doc contract."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "gen-chart-readme.py"

VALUES = """\
# A section note, not a description.

# -- Replicas.
replicas: 1
outer:
  inner:
    # -- First line of a description
    # that goes on here | with a pipe.
    deep: true
  # -- A documented map is one row with its whole default.
  labels:
    app: demo
  undocumented: x
# -- Probe settings.
probe:
  period: 10
"""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "definitions": {"count": {"type": "integer", "minimum": 0}},
    "properties": {
        "replicas": {"$ref": "#/definitions/count"},
        "outer": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "inner": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"deep": {"type": "boolean"}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "undocumented": {"type": "string"},
            },
        },
        "probe": {"type": "object"},
    },
}


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    # hack/ is not a package and the file name has dashes: load it by path.
    spec = importlib.util.spec_from_file_location("gen_chart_readme", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_chart(tmp_path: Path, values: str, schema: dict[str, Any]) -> Path:
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: demo\ndescription: A demo.\nversion: 1.0.0\n")
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "values.schema.json").write_text(json.dumps(schema))
    return tmp_path


def test_readme_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, "run hack/gen-chart-readme.py:\n" + result.stdout + result.stderr


def test_missing_description_is_reported_by_name(gen: ModuleType, tmp_path: Path) -> None:
    chart = write_chart(tmp_path, VALUES, SCHEMA)
    with pytest.raises(gen.ValuesError, match=r"outer\.undocumented: no `# --` description") as err:
        gen.render(chart)
    assert "replicas" not in str(err.value)


def test_key_missing_from_schema_is_reported_by_name(gen: ModuleType, tmp_path: Path) -> None:
    chart = write_chart(tmp_path, VALUES + "# -- Typo.\nreplicaz: 2\n", SCHEMA)
    with pytest.raises(gen.ValuesError, match=r"replicaz: not in values\.schema\.json"):
        gen.render(chart)


def test_nested_paths_and_multi_line_comments(gen: ModuleType, tmp_path: Path) -> None:
    documented = VALUES.replace("  undocumented: x\n", "  # -- Now documented.\n  undocumented: x\n")
    rows = {row.key: row for row in gen.value_rows(documented, SCHEMA)}
    assert list(rows) == ["replicas", "outer.inner.deep", "outer.labels", "outer.undocumented", "probe"]
    deep = rows["outer.inner.deep"]
    assert deep.description == r"First line of a description that goes on here \| with a pipe."
    assert (deep.type, deep.default) == ("boolean", "`true`")
    assert rows["replicas"].description == "Replicas."  # the note above the blank line is not part of it
    assert rows["replicas"].type == "integer"  # through the $ref
    assert rows["outer.labels"].default == '`{"app":"demo"}`'
    assert rows["probe"].type == "object"


def test_comment_scan_skips_block_scalars(gen: ModuleType) -> None:
    text = "# -- Script.\nscript: |\n  # -- not a doc\n  a: b\nitems:\n  - name: x\n# -- Next.\nnext: 1\n"
    # Inside the block scalar neither `# --` nor `a: b` are YAML: no key, no doc for the next key.
    assert gen.comment_docs(text) == {("script",): "Script.", ("next",): "Next."}
