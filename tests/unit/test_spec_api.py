"""spec.api, the one declaration of each field: load maps it onto the dataclasses and runs every rule."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator

from torchjob_core import spec
from torchjob_core.spec import api
from torchjob_core.spec.errors import FieldError
from torchjob_core.spec.fields import MISSING, Array, Field, Map, Object


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def assert_maps_onto(declared: Object, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    assert {snake(k) for k in declared.properties} == {f.name for f in dataclasses.fields(cls)}, cls
    for key, field in declared.properties.items():
        hint = hints[snake(key)]
        nested = [t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)]
        if nested:
            assert isinstance(field, Object)
            assert_maps_onto(field, nested[0])


def test_each_declared_field_is_a_dataclass_field() -> None:
    """load builds the dataclasses by name: a declared field without one (or a typo) fails here."""
    assert_maps_onto(api.SPEC, spec.TrainingJobSpec)
    assert_maps_onto(api.METADATA, spec.Metadata)


def fields(field: Field) -> Iterator[Field]:
    yield field
    children: list[Field] = []
    if isinstance(field, Object):
        children = list(field.properties.values())
    elif isinstance(field, Array):
        children = [field.items]
    elif isinstance(field, Map):
        children = [field.values]
    for child in children:
        yield from fields(child)


def test_every_cel_rule_has_its_python_form() -> None:
    """Only transition rules (oldSelf) lack a predicate: load sees one version of the object."""
    declared = [r for f in fields(api.SPEC) for r in f.all_rules()]
    assert len(declared) >= 12
    assert [r.cel for r in declared if r.holds is None] == [r.cel for r in declared if "oldSelf" in r.cel]


def test_every_default_is_valid() -> None:
    """load applies defaults without checking them (objects aside), so each must pass its own field."""
    for field in fields(api.SPEC):
        if field.default is not MISSING:
            errors: list[FieldError] = []
            field.check(field.default, "x", errors)
            assert errors == [], field
