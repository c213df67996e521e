"""Every invalid manifest of the shared table is rejected by spec.load with an error naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from data.invalid_cases import InvalidCase, base_manifest, load_cases, load_valid
from torchjob_core import spec

CASES = load_cases()


def test_table_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 20


def test_base_manifest_is_valid() -> None:
    job = spec.load(base_manifest())
    assert job.name == "bad"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_names_field(case: InvalidCase) -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.load(case.manifest)
    fields = [e.field for e in info.value.errors]
    assert case.field in fields, str(info.value)
    assert case.field in str(info.value)


@pytest.mark.parametrize(("case_id", "manifest"), load_valid(), ids=[c for c, _ in load_valid()])
def test_valid_edge_case_loads(case_id: str, manifest: dict[str, Any]) -> None:
    assert spec.load(manifest).name == "bad", case_id
