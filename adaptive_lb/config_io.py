"""Config files in and out: YAML loading (``base:`` chains, several files, dotted overrides) and saving.

``load_config(path, overrides)`` reads one or more files, applies dotted ``key=value`` overrides, and builds a
``RunConfig``; the sections check their own keys' types, ranges and combinations when built
(``adaptive_lb/config.py``), so any problem is a one-line ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from adaptive_lb.config import RunConfig
from adaptive_lb.config_fields import Section, check_value, numeric_type, section_hints
from adaptive_lb.errors import ConfigError


# ---------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | typing.Sequence[str | Path], overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read YAML config(s), apply dotted ``key=value`` overrides, validate, return a ``RunConfig``.

    A file may start from another with ``base: other.yaml`` (path relative to the file); its own keys win.
    Several files merge left to right, e.g. a dataset config then a method overlay from ``configs/methods/``.
    """
    raw = load_raw(path, overrides)
    raw.pop("tune", None)  # the search space of `adaptive-lb tune` (adaptive_lb/tune/space.py); train ignores it
    return from_dict(RunConfig, raw)


def load_raw(path: str | Path | typing.Sequence[str | Path], overrides: typing.Sequence[str] = ()) -> dict:
    """The merged YAML mapping of config file(s) with dotted overrides applied, not yet validated."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise ConfigError("no config file given: pass a YAML file such as configs/fashion_mnist.yaml")
    raw: dict = {}
    for one in paths:
        raw = _merge(raw, _read_yaml(Path(one)))
    for item in overrides:
        apply_override(raw, item)
    return raw


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's mapping, merged over its ``base`` chain."""
    if not path.is_file():
        what = f"base config '{path}' (named in {seen[-1]})" if seen else f"config file '{path}'"
        raise ConfigError(f"{what} not found: pass a YAML file such as configs/fashion_mnist.yaml")
    if path.resolve() in seen:
        raise ConfigError(f"config file '{path}' is its own base (a base: cycle): remove one base: line")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: fix the syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (data:, model:, train:, ...)")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a file name, got {base!r}")
    return _merge(_read_yaml(path.parent / base, (*seen, path.resolve())), raw)


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section (nested mappings merge, everything else is replaced)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``3``, ``0.1``, ``true``, ``[1, 2]``)."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' must look like section.key=value, e.g. train.epochs=3")
    if not isinstance(raw, dict):
        raise ConfigError("config file must hold a mapping of sections (data:, model:, train:, ...)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, prefix: str | None = None) -> Any:
    """Build dataclass ``cls`` from a plain mapping; unknown keys are refused here, types and ranges by ``cls``.

    ``prefix`` is the dotted key of ``cls`` in error messages, e.g. ``"data."``; by default its section path.
    """
    if prefix is None:
        path = cls.path if issubclass(cls, Section) else ""
        prefix = f"{path}." if path else ""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    known = {f.name for f in fields(cls)}
    hints = section_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _from_yaml(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _from_yaml(tp: Any, value: Any, key: str) -> Any:
    """YAML's spelling of a value: nested sections built, ``'1e-3'`` (a string to PyYAML) read as a float."""
    if is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return [_from_yaml(typing.get_args(tp)[0], v, key) for v in value]
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


# ---------------------------------------------------------------------------------------------- saving
def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML/JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(asdict(cfg))


def dump_config(cfg: RunConfig) -> str:
    """YAML text of the fully resolved config (every field, defaults included)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---------------------------------------------------------------------------------------------- single fields
def leaf_fields(cls: type | None = None, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every scalar field as ``dotted.name -> (dataclass Field, type)`` (nested sections walked); a number-or-word
    field (``int | str``) is listed with its numeric type, so a tune space can search it."""
    cls = cls or RunConfig
    out: dict[str, tuple[Any, Any]] = {}
    hints = section_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out.update(leaf_fields(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (f, numeric_type(tp))
    return out


def check_field_value(name: str, value: Any, key: str) -> Any:
    """``value`` (YAML spelling) coerced to field ``name``'s type and checked against its range; errors name ``key``."""
    f, tp = leaf_fields()[name]
    return check_value(f, tp, _from_yaml(tp, value, key), key)
