"""Typed field declarations: each one gives its OpenAPI schema and validates a value against it.

A declaration holds a field's type, default, bounds, pattern, description and CEL rules once; the CRD is
generated from it (`schema()`) and `spec.load` validates with it (`check()`), so admission and the CLI reject
a manifest for the same reasons. `check()` reports problems with the apiserver's wording and JSON paths and
returns the value as load keeps it: defaults applied, quantities as strings, undeclared keys kept only where
the schema preserves unknown fields.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, Final

from torchjob_core import quantity
from torchjob_core.spec.errors import FieldError

Schema = dict[str, Any]
Errors = list[FieldError]


# No value: an absent field without a default, or one of the wrong type (that error is reported already).
MISSING: Final = object()


_JSON_TYPES: Final = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_type(value: object) -> str:
    if (exact := _JSON_TYPES.get(type(value))) is not None:  # the fast path: what json and yaml load
        return exact
    # Subclasses; bool before int: True is an int in Python, a boolean in JSON.
    return next((name for kind, name in _JSON_TYPES.items() if isinstance(value, kind)), "null")


def show_value(value: object) -> str:
    """A value as the apiserver prints it in `Invalid value: ...`: objects and lists by their type."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"' if isinstance(value, str) else f'"{json_type(value)}"'


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fresh(value: Any) -> Any:
    """A default to hand out: a copy when a caller could change it."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _present(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if v is not None}


@dataclass(frozen=True)
class Rule:
    """One cross-field rule in its two forms: the CEL admission runs and the Python predicate load runs.

    A generic CEL evaluator is out of scope, so each rule pairs its CEL expression with a predicate that
    says the same thing, side by side in this one declaration; the shared invalid-manifest table
    (tests/data/invalid_manifests.yaml) runs both forms against the same cases. `holds` gets the value of
    the node that declares the rule, defaults applied; a KeyError or TypeError (a field it reads is absent
    or of the wrong type, which is reported already) means the rule does not apply. `holds=None` marks a
    transition rule (`oldSelf`): only admission sees the old object, load sees one version.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool] | None
    field_path: str | None = None
    required: bool = False  # reason FieldValueRequired: "Required value" instead of "Invalid value"

    def schema(self) -> Schema:
        out = {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}
        return {**_present(out), **({"reason": "FieldValueRequired"} if self.required else {})}

    def check(self, value: Any, path: str, errors: Errors) -> None:
        if self.holds is None:
            return
        try:
            if self.holds(value):
                return
        except (KeyError, TypeError):
            return
        at = path + (self.field_path or "")
        # Shows the value of the field the message names (admission shows the declaring node's type).
        shown = "Required value" if self.required else f"Invalid value: {show_value(self._named(value))}"
        errors.append(FieldError(at, f"{shown}: {self.message}"))

    def _named(self, value: Any) -> Any:
        """The value at `field_path` (the field the message names), or the whole value where it is absent."""
        for key in (self.field_path or "").split(".")[1:]:
            if not isinstance(value, dict) or key not in value:
                return value
            value = value[key]
        return value


@dataclass(frozen=True)
class Field:
    """What every declaration has: a description (positional), a default and CEL rules."""

    description: str = ""
    _: KW_ONLY
    default: Any = MISSING
    rules: tuple[Rule, ...] = ()

    # The JSON types a value may have; a value of another type is reported and dropped.
    json_types: ClassVar[tuple[str, ...]] = ()

    def schema(self) -> Schema:
        """The OpenAPI schema; keys whose value is None are left out."""
        rules = [r.schema() for r in self.all_rules()] or None
        default = None if self.default is MISSING else _fresh(self.default)
        return _present(
            {**self._head(), "default": default, **self._body(), "x-kubernetes-validations": rules}
        )

    def check(self, raw: Any, path: str, errors: Errors) -> Any:
        """The value load keeps (MISSING when its type is wrong), recording each problem in `errors`."""
        if self.json_types and json_type(raw) not in self.json_types:
            kind = self.json_types[0]
            errors.append(FieldError(path, f'Invalid value: "{json_type(raw)}": must be of type {kind}'))
            return MISSING
        value = self._check(raw, path, errors)
        if value is not MISSING:
            for rule in self.all_rules():
                rule.check(value, path, errors)
        return value

    def all_rules(self) -> tuple[Rule, ...]:
        """The declared rules plus those the kind implies (`Quantity.positive`, `IntOrAuto`'s range)."""
        return self.rules

    def _head(self) -> Schema:
        """The schema keys before `default`."""
        raise NotImplementedError

    def _body(self) -> Schema:
        """The schema keys after `default`."""
        return {}

    def _check(self, raw: Any, path: str, errors: Errors) -> Any:
        if (problem := self._problem(raw)) is not None:
            errors.append(FieldError(path, problem))
        return raw

    def _problem(self, raw: Any) -> str | None:
        """A scalar's first problem: one message per field, the first one to fix."""
        return None


@dataclass(frozen=True, kw_only=True)
class Str(Field):
    enum: tuple[str, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    fmt: str | None = None  # OpenAPI format, e.g. date-time

    json_types = ("string",)

    def _head(self) -> Schema:
        return {"type": "string", "description": self.description or None, "enum": list(self.enum) or None}

    def _body(self) -> Schema:
        return {
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": self.pattern,
            "format": self.fmt,
        }

    def _problem(self, raw: str) -> str | None:
        if self.enum and raw not in self.enum:
            return f'Unsupported value: "{raw}": supported values: ' + ", ".join(f'"{e}"' for e in self.enum)
        if self.max_length is not None and len(raw) > self.max_length:
            return f"Too long: may not be more than {self.max_length} bytes"
        if self.min_length is not None and len(raw) < self.min_length:
            return f'Invalid value: "{raw}": should be at least {self.min_length} chars long'
        if self.pattern is not None and re.search(self.pattern, raw) is None:
            return f"Invalid value: \"{raw}\": should match '{self.pattern}'"
        return None


@dataclass(frozen=True, kw_only=True)
class Int(Field):
    minimum: int | None = None
    maximum: int | None = None
    fmt: str | None = "int32"
    nullable: bool = False

    json_types = ("integer",)

    def _head(self) -> Schema:
        return {"type": "integer", "format": self.fmt, "description": self.description or None}

    def _body(self) -> Schema:
        return {"minimum": self.minimum, "maximum": self.maximum, "nullable": self.nullable or None}

    def _problem(self, raw: int) -> str | None:
        if self.minimum is not None and raw < self.minimum:
            return f"Invalid value: {raw}: should be greater than or equal to {self.minimum}"
        if self.maximum is not None and raw > self.maximum:
            return f"Invalid value: {raw}: should be less than or equal to {self.maximum}"
        return None


@dataclass(frozen=True, kw_only=True)
class Num(Field):
    """A JSON number: status figures such as a rate, or a spec fraction such as a GPU memory share."""

    minimum: float | None = None
    maximum: float | None = None

    json_types = ("number", "integer")

    def _head(self) -> Schema:
        return {"type": "number", "description": self.description or None}

    def _body(self) -> Schema:
        return {"minimum": self.minimum, "maximum": self.maximum}

    def _problem(self, raw: float) -> str | None:
        if self.minimum is not None and raw < self.minimum:
            return f"Invalid value: {raw}: should be greater than or equal to {self.minimum}"
        if self.maximum is not None and raw > self.maximum:
            return f"Invalid value: {raw}: should be less than or equal to {self.maximum}"
        return None


@dataclass(frozen=True, kw_only=True)
class Bool(Field):
    json_types = ("boolean",)

    def _head(self) -> Schema:
        return {"type": "boolean", "description": self.description or None}


def _int_or_string() -> list[Schema]:
    # A fresh list each time: yaml.safe_dump writes a shared one as an anchor and aliases.
    return [{"type": "integer"}, {"type": "string"}]


@dataclass(frozen=True, kw_only=True)
class IntOrAuto(Field):
    """`auto` or an integer in [minimum, maximum]; the range is a CEL rule (int-or-string has no bounds)."""

    minimum: int
    maximum: int
    default: Any = "auto"

    def _head(self) -> Schema:
        return {
            "description": self.description,
            "anyOf": _int_or_string(),
            "x-kubernetes-int-or-string": True,
        }

    def all_rules(self) -> tuple[Rule, ...]:
        lo, hi = self.minimum, self.maximum
        in_range = Rule(
            f"type(self) == string ? self == 'auto' : (self >= {lo} && self <= {hi})",
            f'must be "auto" or an integer from {lo} to {hi}',
            # Any other type fails this rule too, so that its message says what to write.
            lambda v: v == "auto" if isinstance(v, str) else json_type(v) == "integer" and lo <= v <= hi,
        )
        return (in_range, *self.rules)


_POSITIVE: Final = Rule(
    "type(self) == int ? self > 0 : quantity(self).isGreaterThan(quantity('0'))",
    "must be greater than 0",
    lambda v: quantity.parse(v) > 0,
)


@dataclass(frozen=True, kw_only=True)
class Quantity(Field):
    """A Kubernetes quantity (`500m`, `4Gi`, 2), kept as a string."""

    max_length: int = 64  # bounds the CEL cost of rules that parse it
    positive: bool = False

    def _head(self) -> Schema:
        return {
            "description": self.description,
            "anyOf": _int_or_string(),
            "pattern": quantity.QUANTITY_PATTERN,
            "maxLength": self.max_length,
            "x-kubernetes-int-or-string": True,
        }

    def all_rules(self) -> tuple[Rule, ...]:
        return (_POSITIVE, *self.rules) if self.positive else self.rules

    def check(self, raw: Any, path: str, errors: Errors) -> Any:
        if quantity.is_quantity(raw):
            return super().check(str(raw), path, errors)
        errors.append(
            FieldError(path, f"Invalid value: {show_value(raw)}: should match '{quantity.QUANTITY_PATTERN}'")
        )
        return MISSING

    def _problem(self, raw: str) -> str | None:
        return (
            f"Too long: may not be more than {self.max_length} bytes" if len(raw) > self.max_length else None
        )


@dataclass(frozen=True, kw_only=True)
class Array(Field):
    """A bounded list; `unique` items (listType set) or items unique by `map_keys` (listType map)."""

    items: Field
    max_items: int
    min_items: int | None = None
    unique: bool = False
    map_keys: tuple[str, ...] = ()

    @property
    def list_type(self) -> str | None:
        return "map" if self.map_keys else "set" if self.unique else None

    json_types = ("array",)

    def _head(self) -> Schema:
        return {
            "type": "array",
            "description": self.description or None,
            "items": self.items.schema(),
            "maxItems": self.max_items,
            "x-kubernetes-list-type": self.list_type,
            "x-kubernetes-list-map-keys": list(self.map_keys) or None,
        }

    def _body(self) -> Schema:
        return {"minItems": self.min_items}

    def _check(self, raw: Any, path: str, errors: Errors) -> Any:
        if len(raw) > self.max_items:
            errors.append(FieldError(path, f"Too many: {len(raw)}: must have at most {self.max_items} items"))
        if self.min_items is not None and len(raw) < self.min_items:
            errors.append(
                FieldError(path, f"Invalid value: {len(raw)}: should have at least {self.min_items} items")
            )
        out: list[Any] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            value = self.items.check(item, f"{path}[{i}]", errors)
            if value is MISSING:
                continue
            if (key := self._identity(value)) is not None:
                if key in seen:
                    errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: {key}"))
                seen.add(key)
            out.append(value)
        return out

    def _identity(self, value: Any) -> str | None:
        """What two items must not share, as the apiserver prints it; None when nothing is compared."""
        if self.list_type == "set":
            return json.dumps(value)
        if self.list_type == "map" and all(isinstance(value.get(k), str) for k in self.map_keys):
            return json.dumps({k: value[k] for k in self.map_keys}, separators=(",", ":"))
        return None


@dataclass(frozen=True, kw_only=True)
class Map(Field):
    """An object of arbitrary keys whose values are all `values`."""

    values: Field
    max_properties: int

    json_types = ("object",)

    def _head(self) -> Schema:
        return {
            "type": "object",
            "description": self.description or None,
            "additionalProperties": self.values.schema(),
            "maxProperties": self.max_properties,
        }

    def _check(self, raw: Any, path: str, errors: Errors) -> Any:
        if len(raw) > self.max_properties:
            errors.append(
                FieldError(path, f"Too many: {len(raw)}: must have at most {self.max_properties} items")
            )
        checked = {str(k): self.values.check(v, f"{path}.{k}", errors) for k, v in raw.items()}
        return {k: v for k, v in checked.items() if v is not MISSING}


@dataclass(frozen=True, kw_only=True)
class Object(Field):
    """An object of declared properties; `preserve_unknown` keeps (and leaves unchecked) other keys."""

    properties: Mapping[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    preserve_unknown: bool = False

    json_types = ("object",)

    def _head(self) -> Schema:
        return {
            "type": "object",
            "description": self.description or None,
            "x-kubernetes-preserve-unknown-fields": self.preserve_unknown or None,
            "properties": {name: f.schema() for name, f in self.properties.items()} or None,
            "required": list(self.required) or None,
        }

    def _check(self, raw: Any, path: str, errors: Errors) -> Any:
        out: dict[str, Any] = {}
        for name, f in self.properties.items():
            at = child_path(path, name)
            given = raw.get(name)  # null is absent, as the apiserver prunes it
            value = MISSING if given is None else f.check(given, at, errors)
            if value is MISSING and f.default is not MISSING:
                # Objects defaulted to {} get their own fields' defaults, as structural defaulting does;
                # other defaults are valid by declaration.
                value = f.check(_fresh(f.default), at, errors) if isinstance(f, Object) else _fresh(f.default)
            if value is not MISSING:
                out[name] = value
            elif given is None and name in self.required:
                errors.append(FieldError(at, "Required value"))
        for name, given in raw.items():
            if name in self.properties:
                continue
            if self.preserve_unknown:
                out[str(name)] = copy.deepcopy(given)
            else:  # kubectl's strict field validation rejects them
                errors.append(
                    FieldError(child_path(path, str(name)), "Unknown field: field not declared in schema")
                )
        return out


def opaque(description: str, **properties: Field) -> Object:
    """An embedded core/v1 object: the apiserver validates it when the pod is created."""
    return Object(description, properties=properties, preserve_unknown=True)
