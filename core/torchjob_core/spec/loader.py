"""`load()`: a manifest dict -> TrainingJob, validated and defaulted by the declarations in `spec.api`."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from torchjob_core import constants, quantity, sizing
from torchjob_core.spec.api import METADATA, SPEC
from torchjob_core.spec.errors import FieldError, SpecError
from torchjob_core.spec.fields import Object, Str, json_type
from torchjob_core.spec.types import Metadata, TrainingJob, TrainingJobSpec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

# The whole manifest as load reads it (the apiserver checks apiVersion, kind and metadata itself).
_MANIFEST: Final = Object(
    properties={
        "apiVersion": Str(enum=(constants.API_VERSION,)),
        "kind": Str(enum=(constants.KIND,)),
        "metadata": METADATA,
        "spec": SPEC,
    },
    required=("spec",),
)


@dataclasses.dataclass(frozen=True)
class _Slot:
    """How one dataclass field is read from a checked object."""

    name: str  # the dataclass field
    key: str  # its camelCase key
    nested: type | None  # a dataclass to build from the value
    optional: bool  # `X | None`: an empty string means unset


@functools.cache
def _slots(cls: type) -> tuple[_Slot, ...]:
    """Per class, once: resolving the annotations costs far more than a whole load."""
    hints = typing.get_type_hints(cls)
    slots = []
    for f in dataclasses.fields(cls):
        head, *rest = f.name.split("_")
        options = typing.get_args(hints[f.name]) or (hints[f.name],)
        nested = next((t for t in options if isinstance(t, type) and dataclasses.is_dataclass(t)), None)
        key = head + "".join(word.capitalize() for word in rest)
        slots.append(_Slot(f.name, key, nested, type(None) in options))
    return tuple(slots)


def _build(cls: type[T], value: Mapping[str, Any]) -> T:
    """A dataclass from a checked object: each field from the camelCase key of its name.

    Absent keys keep the dataclass default (so an absent managedBy is this operator and an absent
    elastic is None); nested dataclasses are built the same way and lists become tuples.
    """
    return cls(**{s.name: _convert(s, value[s.key]) for s in _slots(cls) if s.key in value})


def _convert(slot: _Slot, value: Any) -> Any:
    if slot.nested is not None:
        return _build(slot.nested, value)
    if isinstance(value, list):
        return tuple(value)
    # An empty optional name (priorityClassName: "") means unset, as in a PodSpec.
    return None if value == "" and slot.optional else value


_MEMORY_LIMIT = "spec.resources.limits.memory"


def _check_memory(spec: TrainingJobSpec, errors: list[FieldError]) -> None:
    """/dev/shm pages count against the memory limit: limit >= request + shm, or reject.

    Admission's CEL rule (`api._memory_covers_shm`) sees sharedMemory.sizeLimit only when it is set, else
    its 256Mi floor; the size derived from the loader settings is checked here, by the operator (job
    Failed, reason InvalidSpec) and the CLI.
    """
    limit = spec.resources.limits.get("memory")
    if limit is None:
        return
    request = spec.resources.requests.get("memory", "0")
    shm = sizing.shm_bytes(spec)
    need = quantity.to_bytes(request) + shm
    if quantity.to_bytes(limit) < need:
        errors.append(
            FieldError(
                _MEMORY_LIMIT,
                f'Invalid value: "{limit}": must be at least requests.memory ({request}) + /dev/shm '
                f"sizeLimit ({quantity.format_bytes(shm)}) = {quantity.format_bytes(need)}, because /dev/shm "
                "pages count against the memory limit; raise limits.memory or set "
                "spec.sharedMemory.sizeLimit",
            )
        )


def load(manifest: Mapping[str, Any]) -> TrainingJob:
    """Parse and validate a whole TrainingJob manifest, applying the CRD's defaults.

    Raises SpecError naming the JSON path of each invalid field.
    """
    if not isinstance(manifest, Mapping):  # a kopf Body is a Mapping; its values are plain dicts
        raise SpecError(
            "", f'Invalid value: "{json_type(manifest)}": a TrainingJob manifest must be an object'
        )
    errors: list[FieldError] = []
    # The status is the operator's: load neither reads nor checks it.
    checked = _MANIFEST.check({k: v for k, v in manifest.items() if k != "status"}, "", errors)
    if not errors:
        job = TrainingJob(
            metadata=_build(Metadata, checked["metadata"]), spec=_build(TrainingJobSpec, checked["spec"])
        )
        _check_memory(job.spec, errors)
    if errors:
        raise SpecError(errors[0].field, errors[0].message, errors)
    return job
