"""Validation errors that name the JSON path of the field, as the apiserver does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its JSON path and an apiserver-style message."""

    field: str
    message: str


class SpecError(ValueError):
    """An invalid TrainingJob; `field` is the JSON path of the first problem, `errors` lists all."""

    def __init__(self, field: str, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.field = field
        self.message = message
        self.errors: tuple[FieldError, ...] = tuple(errors) or (FieldError(field, message),)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))
