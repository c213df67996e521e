"""Kubernetes resource quantities ("500m", "4Gi", "1e3", 2) as exact decimals."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final

# Same grammar as resource.Quantity and the pattern controller-gen emits for it.
QUANTITY_PATTERN: Final = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"  # noqa: E501
_QUANTITY_RE: Final = re.compile(QUANTITY_PATTERN)

_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
MI: Final = 1024 * 1024


def is_quantity(value: object) -> bool:
    """True for an int or a string in resource.Quantity syntax (bools are not quantities)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and _QUANTITY_RE.match(value) is not None


def parse(value: str | int) -> Decimal:
    """Parse a quantity into an exact Decimal in base units (bytes, cores).

    Raises ValueError for anything that is not a quantity.
    """
    if not is_quantity(value):
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    if isinstance(value, int):
        return Decimal(value)
    for suffix, power in _BINARY.items():
        if value.endswith(suffix):
            return Decimal(value[: -len(suffix)]) * (Decimal(1024) ** power)
    if len(value) > 1 and value[-1] in _DECIMAL and value[-1] not in "eE":
        return Decimal(value[:-1]) * (Decimal(10) ** _DECIMAL[value[-1]])
    return Decimal(value)


def to_bytes(value: str | int) -> int:
    """A memory quantity in whole bytes, rounded up (as the kubelet does)."""
    return math.ceil(parse(value))


def round_up_mi(n_bytes: int) -> int:
    """Round a byte count up to a whole number of mebibytes."""
    return -(-n_bytes // MI) * MI


def format_mi(n_bytes: int) -> str:
    """Bytes as a `<n>Mi` quantity string, rounded up."""
    return f"{round_up_mi(n_bytes) // MI}Mi"


def format_bytes(n_bytes: int) -> str:
    """The shortest exact binary-suffixed form, for messages (`5Gi`, `1536Mi`, `100`)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = 1024 ** _BINARY[suffix]
        if n_bytes and n_bytes % unit == 0:
            return f"{n_bytes // unit}{suffix}"
    return str(n_bytes)


def format_decimal(value: Decimal) -> str:
    """A canonical quantity string: whole units (`24`, `4831838208`), else milli-units (`1500m`)."""
    if value == value.to_integral_value():
        return str(int(value))
    milli = value * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return format(value.normalize(), "f")
