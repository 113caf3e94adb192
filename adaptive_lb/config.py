"""Every knob of a run, as frozen dataclasses (the one home for hyperparameters).

YAML files in ``configs/`` mirror these classes. ``load_config(path, overrides)`` reads one, applies dotted
``key=value`` overrides, and checks every key, type and range; any problem is a one-line ``ConfigError``.
Ranges live next to the field (``knob(default, ge=..., choices=...)``) so that the check and the
documentation cannot drift apart.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from adaptive_lb.errors import ConfigError


def knob(default: Any, *, choices: tuple | None = None, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None) -> Any:
    """A config field with its allowed range; checked by ``from_dict``."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SyntheticConfig:
    """Small images drawn from overlapping class distributions, for fast tests."""

    num_classes: int = knob(10, ge=2)          # number of classes
    per_class: int = knob(300, ge=4)           # training images per class (the test split gets a third)
    image_size: int = knob(28, ge=8)           # side of the square 1-channel images, pixels
    noise: float = knob(0.35, ge=0.0)          # pixel noise std, on the [0, 1] intensity scale
    difficulty_spread: float = knob(1.0, ge=0.0)  # class c's noise is noise * (1 + spread * c / (C-1))


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how the train / held-out / test splits are carved."""

    name: str = knob("fashion_mnist", choices=("fashion_mnist", "cifar10", "cifar100", "synthetic"))
    root: str = ""                 # folder holding the files; "" = ./data, then the Debian folder
    download: bool = False         # let torchvision download missing files (needs internet)
    heldout_fraction: float = knob(0.1, gt=0.0, lt=1.0)  # share of each class's training images held out
    heldout_balanced: bool = True  # same held-out count for every class (fraction of the smallest class)
    subset_per_class: int = knob(0, ge=0)       # keep N training images per class before the split; 0 = all
    test_subset_per_class: int = knob(0, ge=0)  # keep N test images per class; 0 = all
    long_tail: str = knob("none", choices=("none", "exp", "step"))  # profile applied to the training part only
    imbalance_ratio: float = knob(1.0, ge=1.0)  # rho = n_max / n_min of the long-tail profile
    step_minor_fraction: float = knob(0.5, gt=0.0, lt=1.0)  # share of classes that are minor (step profile)
    synthetic: SyntheticConfig = knob(SyntheticConfig())     # used when name = synthetic


@dataclass(frozen=True)
class ModelConfig:
    """The classifier."""

    name: str = "small_cnn"        # small_cnn | resnet20 | resnet32 | tv:<torchvision model name>
    width: int = knob(24, ge=4)    # channels of the first stage of small_cnn (doubles per stage)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped once per batch)."""

    name: str = knob("sgd", choices=("sgd", "adamw"))
    lr: float = knob(0.05, gt=0.0)              # peak learning rate
    momentum: float = knob(0.9, ge=0.0, lt=1.0)  # SGD momentum (AdamW: beta1)
    nesterov: bool = True                       # Nesterov momentum (SGD only)
    weight_decay: float = knob(5e-4, ge=0.0)    # L2 (SGD) or decoupled (AdamW) decay, per step
    schedule: str = knob("cosine", choices=("cosine", "onecycle", "constant"))
    warmup_epochs: float = knob(0.0, ge=0.0)    # linear warm-up for cosine/constant, epochs


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    epochs: int = knob(10, ge=1)                 # passes over the training part
    batch_size: int = knob(256, ge=1)            # images per optimiser step
    eval_batch_size: int = knob(1024, ge=1)      # images per forward pass when evaluating
    seed: int = knob(0, ge=0)                    # seeds init, shuffling and splits: same seed, same run
    device: str = "auto"                         # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    amp: str = knob("auto", choices=("auto", "bf16", "off"))             # auto = bf16 autocast on CUDA only
    channels_last: str = knob("auto", choices=("auto", "on", "off"))     # auto = on for CUDA and CPU (faster convs)
    log_every: int = knob(50, ge=1)              # batches between loss read-outs (host sync + NaN check)
    threads: int = knob(0, ge=0)                 # CPU threads for torch; 0 = torch's default


@dataclass(frozen=True)
class ControllerConfig:
    """What sets the per-class loss weights each epoch (the closed loop plugs in here)."""

    name: str = knob("static", choices=("static",))
    weights: tuple[float, ...] = ()  # fixed per-class loss weights for `static`, > 0; () = all ones (ERM)


@dataclass(frozen=True)
class RunConfig:
    """A whole run; ``configs/*.yaml`` mirror this."""

    name: str = "run"              # label used in default run-dir names
    data: DataConfig = knob(DataConfig())
    model: ModelConfig = knob(ModelConfig())
    optim: OptimConfig = knob(OptimConfig())
    train: TrainConfig = knob(TrainConfig())
    controller: ControllerConfig = knob(ControllerConfig())

    def __post_init__(self) -> None:
        if any(not (w > 0 and w < float("inf")) for w in self.controller.weights):
            raise ConfigError("controller.weights: every weight must be finite and > 0")


# ---------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply dotted ``key=value`` overrides, validate, return a ``RunConfig``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found: pass a YAML file such as configs/fashion_mnist.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: fix the syntax there") from None
    for item in overrides:
        apply_override(raw, item)
    return from_dict(RunConfig, raw)


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


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, checking keys, types and ranges."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
        _check_range(known[key], kwargs[key], f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted as floats, '1e-3' strings too."""
    if is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if typing.get_origin(tp) is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[tp]
    if isinstance(value, accepted) and (tp is bool or not isinstance(value, bool)):
        return float(value) if tp is float else value
    if tp is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")


def _check_range(f: Any, value: Any, key: str) -> None:
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(meta['choices'])}")
    bounds = [("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")]
    for name, ok, sym in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: {value} is out of range, it must be {sym} {bound}")


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

