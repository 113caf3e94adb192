"""The study's settings and search space: the ``tune:`` block of a run config.

A config file used with ``adaptive-lb tune`` carries, beside the run's sections, a block such as::

    tune:
      guard_delta: 0.005          # held-out accuracy may fall at most this far below the ERM reference
      params:                     # dotted config key -> range (low/high, optional log/step) or choices
        controller.damping: {low: 0.1, high: 1.0}
        controller.margin_gain: {low: 0.0, high: 0.4}
        controller.weight_fn: {choices: [power_ratio, cdb]}

Every parameter is a real config field: its type decides the Optuna distribution (float, int, categorical)
and every bound or choice is checked against the field's own range, so a study cannot propose a config
that ``train`` would refuse. ``adaptive-lb train`` ignores the ``tune:`` block.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adaptive_lb.config import RunConfig, Section, knob
from adaptive_lb.config_io import apply_override, check_field_value, from_dict, leaf_fields, load_raw, to_dict
from adaptive_lb.errors import ConfigError

# The reference of the accuracy guard and of the final comparison: plain ERM on the same data and model.
ERM_OVERRIDES = ("controller.name=static", "controller.count_weights=none", "controller.weights=[]",
                 "loss.name=ce", "data.sampler=none", "posthoc.method=none")


@dataclass(frozen=True)
class TuneConfig(Section):
    """How the study searches, judges and stops trials (every field but ``params``)."""

    path: ClassVar[str] = "tune"

    # single: minimise held-out TPR variance subject to the accuracy guard; multi: the Pareto front of
    # (held-out TPR variance down, held-out balanced accuracy up), guard still applied
    mode: str = knob("single", choices=("single", "multi"))
    guard_metric: str = knob("accuracy", choices=("accuracy", "balanced_accuracy"))  # held-out metric guarded
    guard_delta: float = knob(0.005, ge=0.0, le=1.0)  # a trial more than this below the reference is infeasible
    reference_accuracy: float = knob(0.0, ge=0.0, le=1.0)  # given reference; 0 = train ERM once per study
    reference_overrides: tuple[str, ...] = ERM_OVERRIDES  # turn the config into the reference run
    trial_overrides: tuple[str, ...] = ()  # dotted overrides for trials and reference only (shorter runs);
    # best.yaml and the final retraining use the config without them
    # seeds a trial (and a trained reference) averages its objective and guard over: train.seed, train.seed + 1,
    # ...; one seed's select TPR variance is noisy (300 images a class: trials' gaps sit inside it). Pruning
    # reads the first seed's epochs only, so a trial costs one run until it survives them
    trial_seeds: int = knob(1, ge=1)
    sampler: str = knob("tpe", choices=("tpe", "random"))
    pruner: str = knob("median", choices=("median", "hyperband", "none"))  # single mode only
    startup_trials: int = knob(4, ge=0)       # trials finished before TPE models and the median pruner acts
    prune_warmup_epochs: int = knob(2, ge=0)  # epochs of every trial that are never pruned
    seed: int = knob(0, ge=0)                 # sampler seed (each worker offsets it)
    heartbeat_s: int = knob(20, ge=1)         # database storages: seconds between a running trial's heartbeats
    grace_s: int = knob(60, ge=2)             # a trial silent this long is failed and retried; > heartbeat_s
    retries: int = knob(2, ge=0)              # times a killed or interrupted trial is re-queued
    enqueue_default: bool = True              # the first trial of a new study tries the config's own values
    final_seeds: tuple[int, ...] = (1000, 1001, 1002)  # fresh seeds for the retraining of best/default/ERM

    def check_combinations(self) -> None:
        if self.grace_s <= self.heartbeat_s:
            raise ConfigError(f"tune.grace_s ({self.grace_s}) must exceed tune.heartbeat_s ({self.heartbeat_s})")
        if not self.final_seeds == tuple(dict.fromkeys(self.final_seeds)):
            raise ConfigError("tune.final_seeds: seeds repeat; give distinct seeds")


@dataclass(frozen=True)
class Param:
    """One searched config field: a range (float/int) or a list of choices."""

    name: str
    kind: str                      # float | int | categorical
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float = 0.0              # 0 = continuous (float) / 1 (int)
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value of this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step) or 1)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step or None)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass
class TuneSpec:
    """A run config (without ``tune:``), the study settings and the parameters searched."""

    raw: dict
    tune: TuneConfig
    params: dict[str, Param] = field(default_factory=dict)

    def config(self, values: dict[str, Any] | None = None, *, trial: bool = False,
               reference: bool = False) -> RunConfig:
        """The run config with ``values`` set; ``trial`` adds trial_overrides, ``reference`` the ERM ones."""
        raw = copy.deepcopy(self.raw)
        # trials never read the test split: evaluate it once, at the end (trial_overrides may say otherwise)
        trial_items = ("train.test_every=0", *self.tune.trial_overrides) if trial else ()
        for item in trial_items + (self.tune.reference_overrides if reference else ()):
            apply_override(raw, item)
        for name, value in (values or {}).items():
            node = raw
            *sections, leaf = name.split(".")
            for part in sections:
                node = node.setdefault(part, {})
            node[leaf] = value
        return from_dict(RunConfig, raw)

    def trial_seeds(self) -> tuple[int, ...]:
        """The seeds every trial trains: the trial config's ``train.seed`` and the next ``trial_seeds - 1``."""
        first = self.config(trial=True).train.seed
        return tuple(range(first, first + self.tune.trial_seeds))

    def default_values(self) -> dict[str, Any]:
        """The base config's own value of every searched parameter."""
        cfg = to_dict(self.config())
        out = {}
        for name in self.params:
            node = cfg
            for part in name.split("."):
                node = node[part]
            out[name] = node
        return out

    def fingerprint(self) -> str:
        """What a study must keep fixed across workers and resumes: what its trials train and how they are judged.

        The config as written (not resolved, so a config field added by a later release does not orphan a
        study), the space, and the objective's settings; sampler, pruner, heartbeat and final seeds may change.
        """
        t = self.tune
        judged = {k: getattr(t, k) for k in ("mode", "guard_metric", "guard_delta", "reference_accuracy",
                                              "reference_overrides", "trial_overrides")}
        if t.trial_seeds > 1:  # a one-seed study made before the field keeps its fingerprint
            judged["trial_seeds"] = t.trial_seeds
        return json.dumps({"config": self.raw, "tune": judged,
                           "params": {k: to_dict(p) for k, p in self.params.items()}}, sort_keys=True, default=str)


def load_tune_spec(paths: list[str], overrides: list[str]) -> TuneSpec:
    """Read config file(s) + overrides; validate the run config, the ``tune:`` block and the space."""
    raw = load_raw(paths, overrides)
    block = raw.pop("tune", None)
    if block is None:
        raise ConfigError("the config has no tune: block: add one with tune.params (see configs/tune/"
                          "fashion_mnist.yaml), or pass configs/tune/<name>.yaml after the config")
    if not isinstance(block, dict):
        raise ConfigError(f"tune: expected a mapping of keys, got {type(block).__name__} {block!r}")
    block = dict(block)
    space = block.pop("params", None)
    tune = from_dict(TuneConfig, block)
    spec = TuneSpec(raw, tune, parse_space(space))
    spec.config()  # the base config itself must be valid
    for name in spec.params:
        for item in tune.trial_overrides:
            if item.partition("=")[0] == name:
                raise ConfigError(f"tune.trial_overrides sets {name}, which is also searched: drop one")
    spec.config(trial=True, reference=True)
    clash = sorted(set(spec.trial_seeds()) & set(tune.final_seeds))
    if clash:
        raise ConfigError(f"tune.trial_seeds: trials would train seed(s) {clash}, which tune.final_seeds keeps "
                          "fresh for the final comparison; lower trial_seeds or move train.seed")
    return spec


def parse_space(space: Any) -> dict[str, Param]:
    """``tune.params`` mapping -> parameters; unknown names, empty ranges, bad bounds raise ConfigError."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("tune.params: give at least one parameter, e.g. controller.damping: {low: 0.1, high: 1}")
    known = leaf_fields()
    return {str(name): _param(str(name), spec, known) for name, spec in space.items()}


def _param(name: str, spec: Any, known: dict) -> Param:
    key = f"tune.params.{name}"
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; use a dotted config key such as controller.damping"
        raise ConfigError(f"{key}: unknown parameter '{name}'{hint}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a mapping such as {{low: 0.1, high: 1.0}} or {{choices: [a, b]}}")
    unknown = set(spec) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use low, high, log, "
                          "step or choices")
    tp = known[name][1]
    if tp not in (int, float, str, bool):
        raise ConfigError(f"{key}: {name} is a list, it cannot be searched; search one scalar field at a time")
    if "choices" in spec or tp in (str, bool):
        return _categorical(name, spec, tp, key)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key}: a numeric parameter needs low and high (or choices)")
    low = check_field_value(name, spec["low"], f"{key}.low")
    high = check_field_value(name, spec["high"], f"{key}.high")
    if not low < high:
        raise ConfigError(f"{key}: empty range [{low}, {high}]: low must be below high")
    log = spec.get("log", False)
    step = spec.get("step", 0)
    if not isinstance(log, bool) or isinstance(step, bool) or not isinstance(step, (int, float)) or step < 0:
        raise ConfigError(f"{key}: log must be true/false and step a number >= 0")
    if log and (low <= 0 or step):
        raise ConfigError(f"{key}: log scale needs low > 0 and no step")
    if tp is int and step and step != int(step):
        raise ConfigError(f"{key}: an integer parameter needs an integer step")
    return Param(name, "int" if tp is int else "float", low, high, log, float(step))


def _categorical(name: str, spec: dict, tp: type, key: str) -> Param:
    choices = spec.get("choices", [False, True] if tp is bool else None)
    if set(spec) - {"choices"}:
        raise ConfigError(f"{key}: choices cannot be combined with low/high/log/step")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{key}: choices must be a non-empty list, e.g. choices: [a, b]")
    checked = tuple(check_field_value(name, c, f"{key}.choices[{i}]") for i, c in enumerate(choices))
    if len(set(checked)) != len(checked):
        raise ConfigError(f"{key}: choices repeat")
    return Param(name, "categorical", choices=checked)
