"""How a config field is declared and checked: ``knob`` (a field with its range), ``Section`` (a dataclass that
checks its fields when built) and the checks themselves. The sections live in ``adaptive_lb/config.py``.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import Field, field, fields, is_dataclass
from typing import Any, ClassVar

from adaptive_lb.errors import ConfigError


def knob(default: Any, *, choices: tuple | None = None, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None, words: tuple[str, ...] = ()) -> Any:
    """A config field with its allowed range; checked when its section is built. ``words``: strings accepted in
    place of a number (annotate the field ``int | str``), e.g. ``auto``."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "words": words}
    if is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of the config sections: building one (from YAML or in Python) checks every field, then combinations."""

    path: ClassVar[str] = ""  # the section's dotted key in a RunConfig, e.g. "data.synthetic"; "" = the run

    def __post_init__(self) -> None:
        hints = section_hints(type(self))
        for f in fields(self):
            key = f"{self.path}.{f.name}" if self.path else f.name
            object.__setattr__(self, f.name, check_value(f, hints[f.name], getattr(self, f.name), key))
        self.check_combinations()

    def check_combinations(self) -> None:
        """Rules across the section's fields (and the sections below it); none by default."""


@functools.cache
def section_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of dataclass ``cls`` (cached: ``typing.get_type_hints`` is slow)."""
    return typing.get_type_hints(cls)


def check_value(f: Field, tp: Any, value: Any, key: str) -> Any:
    """``value`` of field ``f`` (annotation ``tp``) checked for type, finiteness and range; errors name ``key``.

    Ints are accepted as floats (and returned as floats), lists as tuples. A field with ``words`` takes one of
    them as it is, or else a number of its numeric type.
    """
    words = f.metadata.get("words") or ()
    if words:
        if isinstance(value, str):
            if value not in words:
                raise ConfigError(f"{key}: '{value}' is not a number or {' | '.join(words)}")
            return value
        tp = numeric_type(tp)
    value = _coerce(tp, value, key, words)
    _check_range(f.metadata, value, key)
    return value


def numeric_type(tp: Any) -> Any:
    """``int`` for ``int | str`` (a number-or-word field); any other annotation as it is."""
    args = [a for a in typing.get_args(tp) if a is not str]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _coerce(tp: Any, value: Any, key: str, words: tuple[str, ...] = ()) -> Any:
    if is_dataclass(tp):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected a {tp.__name__} section, got {type(value).__name__} {value!r}")
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(typing.get_args(tp)[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[tp]
    if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
        expected = " or ".join([tp.__name__, *words])
        raise ConfigError(f"{key}: expected {expected}, got {type(value).__name__} {value!r}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number")
    return value


def _check_range(meta: Any, value: Any, key: str) -> None:
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(map(str, meta['choices']))}")
    bounds = [("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")]
    for name, ok, sym in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: {value} is out of range, it must be {sym} {bound}")
