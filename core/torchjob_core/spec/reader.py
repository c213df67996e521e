"""Reads typed fields from a manifest, recording apiserver-style errors with their JSON paths."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torchjob_core import quantity
from torchjob_core.spec.errors import FieldError
from torchjob_core.spec.rules import MAX_ENV, MAX_EXIT_CODES, MAX_QUANTITY_LENGTH, MAX_STRING_LENGTH
from torchjob_core.spec.types import JSON, Auto


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def show_value(value: object) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


class Reader:
    """Reads typed fields from one JSON object, recording apiserver-style errors under `path`."""

    def __init__(self, data: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
        self.data = data
        self.path = path
        self.errors = errors
        self.known: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.errors.append(FieldError(self.at(key), message))

    def _raw(self, key: str, kind: str) -> Any:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if json_type(value) != kind:
            self.error(key, f'Invalid value: "{json_type(value)}": must be of type {kind}')
            return None
        return value

    def required(self, key: str) -> None:
        self.error(key, "Required value")

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        enum: Sequence[str] = (),
        pattern: str | None = None,
        max_length: int = MAX_STRING_LENGTH,
        min_length: int = 0,
    ) -> str | None:
        value = self._raw(key, "string")
        if value is None:
            return default
        if enum and value not in enum:
            supported = ", ".join(f'"{e}"' for e in enum)
            self.error(key, f'Unsupported value: "{value}": supported values: {supported}')
        elif len(value) > max_length:
            self.error(key, f"Too long: may not be more than {max_length} bytes")
        elif len(value) < min_length:
            self.error(key, f'Invalid value: "{value}": should be at least {min_length} chars long')
        elif pattern is not None and re.search(pattern, value) is None:
            self.error(key, f"Invalid value: \"{value}\": should match '{pattern}'")
        return str(value)

    def integer(
        self, key: str, default: int | None, *, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        value = self._raw(key, "integer")
        if value is None:
            return default
        return self._bounded(key, int(value), minimum, maximum)

    def _bounded(self, key: str, value: int, minimum: int, maximum: int | None) -> int:
        if value < minimum:
            self.error(key, f"Invalid value: {value}: should be greater than or equal to {minimum}")
        elif maximum is not None and value > maximum:
            self.error(key, f"Invalid value: {value}: should be less than or equal to {maximum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw(key, "boolean")
        return default if value is None else bool(value)

    def int_or_auto(self, key: str, *, minimum: int, maximum: int) -> int | Auto:
        self.known.add(key)
        value = self.data.get(key)
        if value is None or value == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool):
            return self._bounded(key, value, minimum, maximum)
        self.error(key, f'Invalid value: {show_value(value)}: must be "auto" or an integer >= {minimum}')
        return "auto"

    def quantity(self, key: str, default: str | None = None) -> str | None:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            return default
        if not quantity.is_quantity(value):
            self.error(key, f"Invalid value: {show_value(value)}: should match '{quantity.QUANTITY_PATTERN}'")
            return default
        if len(str(value)) > MAX_QUANTITY_LENGTH:
            self.error(key, f"Too long: may not be more than {MAX_QUANTITY_LENGTH} bytes")
        return str(value)

    def string_list(self, key: str, default: tuple[str, ...], *, max_items: int) -> tuple[str, ...]:
        value = self._raw(key, "array")
        if value is None:
            return default
        self._max_items(key, value, max_items)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{key}[{i}]", f'Invalid value: "{json_type(item)}": must be of type string')
        return tuple(str(item) for item in value)

    def int_list(self, key: str, default: tuple[int, ...], *, minimum: int, maximum: int) -> tuple[int, ...]:
        value = self._raw(key, "array")
        if value is None:
            return default
        self._max_items(key, value, MAX_EXIT_CODES)
        out: list[int] = []
        for i, item in enumerate(value):
            if json_type(item) != "integer":
                self.error(f"{key}[{i}]", f'Invalid value: "{json_type(item)}": must be of type integer')
                continue
            self._bounded(f"{key}[{i}]", item, minimum, maximum)
            if item in out:
                self.error(f"{key}[{i}]", f"Duplicate value: {item}")
            out.append(item)
        return tuple(out)

    def _max_items(self, key: str, value: list[Any], max_items: int) -> None:
        if len(value) > max_items:
            self.error(key, f"Too many: {len(value)}: must have at most {max_items} items")

    def string_map(
        self, key: str, *, max_properties: int = MAX_ENV, quantities: bool = False
    ) -> dict[str, str]:
        value = self._raw(key, "object")
        if value is None:
            return {}
        if len(value) > max_properties:
            self.error(key, f"Too many: {len(value)}: must have at most {max_properties} items")
        out: dict[str, str] = {}
        for k, v in value.items():
            if quantities:
                if not quantity.is_quantity(v):
                    self.error(
                        f"{key}.{k}",
                        f"Invalid value: {show_value(v)}: should match '{quantity.QUANTITY_PATTERN}'",
                    )
                    continue
                if len(str(v)) > MAX_QUANTITY_LENGTH:
                    self.error(f"{key}.{k}", f"Too long: may not be more than {MAX_QUANTITY_LENGTH} bytes")
            elif not isinstance(v, str):
                self.error(f"{key}.{k}", f'Invalid value: "{json_type(v)}": must be of type string')
                continue
            out[str(k)] = str(v)
        return out

    def child(self, key: str) -> Reader | None:
        value = self._raw(key, "object")
        return None if value is None else Reader(value, self.at(key), self.errors)

    def child_or_empty(self, key: str) -> Reader:
        """Objects the CRD defaults to `{}` so that their fields' defaults apply."""
        return self.child(key) or Reader({}, self.at(key), self.errors)

    def raw_object(self, key: str) -> JSON | None:
        value = self._raw(key, "object")
        return None if value is None else copy.deepcopy(dict(value))

    def object_list(self, key: str, *, max_items: int) -> list[Reader]:
        value = self._raw(key, "array")
        if value is None:
            return []
        self._max_items(key, value, max_items)
        readers: list[Reader] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.error(f"{key}[{i}]", f'Invalid value: "{json_type(item)}": must be of type object')
                continue
            readers.append(Reader(item, f"{self.at(key)}[{i}]", self.errors))
        return readers

    def finish(self) -> None:
        """Reject fields the schema does not declare (kubectl's strict field validation does)."""
        for key in self.data:
            if key not in self.known:
                self.error(str(key), "Unknown field: field not declared in schema")


def map_list(reader: Reader, key: str, *, required: Sequence[str], max_items: int) -> tuple[JSON, ...]:
    """A core/v1 list keyed by `name` (listType map): required string keys, no duplicate names."""
    items: list[JSON] = []
    seen: set[str] = set()
    for item in reader.object_list(key, max_items=max_items):
        for req in required:
            item.known.add(req)
            value = item.data.get(req)
            if value is None:
                item.required(req)
            elif not isinstance(value, str):
                item.error(req, f'Invalid value: "{json_type(value)}": must be of type string')
            elif req == "name":
                if value in seen:
                    reader.errors.append(FieldError(item.path, f'Duplicate value: {{"name":"{value}"}}'))
                seen.add(value)
        items.append(copy.deepcopy(dict(item.data)))
    return tuple(items)
