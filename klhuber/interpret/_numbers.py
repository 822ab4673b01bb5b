"""Exact numbers of the interpretation: validation of λ, α, σ and the anchor, as Fractions.

Integers (also ``10.0``) become :class:`~fractions.Fraction` so that the arithmetic of
Tables 1-2 stays exact; other floats stay floats.  Internal to :mod:`klhuber.interpret`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

__all__ = ["COORDINATES", "Number", "all_same", "check_four", "check_number", "to_fraction"]

Number = Fraction | float | int

#: Box coordinates, in the order of ``StageLoss.sigma``.
COORDINATES: tuple[str, ...] = ("x", "y", "w", "h")

def check_number(value: Any, name: str, *, allow_zero: bool = False) -> Number:
    """Validate a positive (or non-negative) finite real; integers (also 10.0) become Fractions."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = Fraction(int(value))
    elif not isinstance(value, Fraction):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if value.is_integer():  # 10.0 is exactly 10: keep arithmetic exact
            value = Fraction(int(value))
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def check_four(values: Any, name: str, *, allow_zero: bool = False) -> tuple[Number, ...]:
    """A scalar (broadcast to the four coordinates) or a length-4 sequence, validated."""
    if isinstance(values, (numbers.Real,)) and not isinstance(values, bool):
        values = (values,) * 4
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a number or a sequence of 4 numbers "
                         f"(x, y, w, h), got {values!r}") from None
    if len(values) != 4:
        raise ValueError(f"{name} must have 4 entries (x, y, w, h), got {len(values)}: {values!r}")
    return tuple(check_number(v, f"{name}[{i}] ({c})", allow_zero=allow_zero)
                 for i, (v, c) in enumerate(zip(values, COORDINATES)))


def all_same(values: Iterable[Number]) -> bool:
    """All equal: exactly for Fractions, to 1e-12 relative for floats."""
    values = list(values)
    first = values[0]
    if all(isinstance(v, Fraction) for v in values):
        return all(v == first for v in values)
    return all(math.isclose(float(v), float(first), rel_tol=1e-12, abs_tol=0.0) for v in values)


def to_fraction(value: Number, max_denominator: int | None = None) -> Fraction:
    """``value`` as a Fraction (a float limited to ``max_denominator`` when given)."""
    if isinstance(value, Fraction):
        return value
    fraction = Fraction(value)
    return fraction.limit_denominator(max_denominator) if max_denominator else fraction
