"""Range checks for every setting a user or an API client can send: one way to say "out of range".

A setting is a number within (low, high), a whole number where its field is an int; NaN, booleans and text are
refused. `OutOfRange` carries the name, the value and the range, so a UI can say it in its own language.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Mapping


class OutOfRange(ValueError):
    """A setting outside its range (or not a number, or not whole where it must be)."""

    def __init__(self, name: str, value, low, high, whole: bool = False):
        self.name, self.value, self.low, self.high, self.whole = name, value, low, high, whole
        if whole and isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
            message = f"{name} must be a whole number, got {value!r}"
        else:
            message = f"{name} must be between {low:g} and {high:g}, got {value!r}"
        super().__init__(message)


def check_number(name: str, value, low: float, high: float, whole: bool = False) -> int | float:
    """`value` if it is a finite number within [low, high] (and whole when `whole`), else OutOfRange."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not low <= value <= high:
        raise OutOfRange(name, value, low, high, whole)
    if whole and value != int(value):
        raise OutOfRange(name, value, low, high, whole)
    return int(value) if whole else value


def check_fields(settings, limits: Mapping[str, tuple[float, float]]):
    """Every field of a settings dataclass that `limits` names, within its (low, high), whole where the field is an
    int; OutOfRange for the first that is not. Returns `settings`."""
    for f in fields(settings):
        if f.name in limits:
            low, high = limits[f.name]
            check_number(f.name, getattr(settings, f.name), low, high, whole=f.type in ("int", int))
    return settings
