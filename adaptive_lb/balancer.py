"""``RecallBalancer``: the closed loop as one object for any training loop; the CLI trainer drives it too.

It holds the controller (``controllers.py``), the training loss (``losses.py``) and the current action: per-class
loss weights, augmentation intensities, logit offsets and pairwise margins. Four calls make the loop::

    loss = balancer.loss(model(x), y)        # training batches: the loss under the current action
    balancer.observe(model(x_val), y_val)    # held-out batches (logits and labels), any number of them
    stats = balancer.step()                  # once an epoch: the controller update -> {name: float}
    balancer.calibrate(model(x_test))        # + the per-class biases of fit_calibration (identity before it)

**Distributed.** When a ``torch.distributed`` process group is initialised, ``step`` and ``fit_calibration``
gather every rank's observed logits and labels (``all_gather``, in rank order), so every rank computes the same
measurement, hence the same action. A ``DistributedSampler`` that pads the held-out split repeats a few samples.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from adaptive_lb.actuators import blend_confused_pairs
from adaptive_lb.augment import TensorAugmenter, TextAugmenter
from adaptive_lb.config import (
    AUG_OPS,
    TEXT_AUG_OPS,
    ControllerConfig,
    LossConfig,
    PosthocConfig,
    RunConfig,
    TrainConfig,
)
from adaptive_lb.controllers import ControlAction, create_controller, warn_if_control_is_noisy
from adaptive_lb.errors import UserError
from adaptive_lb.frontier import choose_spread_weight
from adaptive_lb.losses import create_loss
from adaptive_lb.metrics import Measurement
from adaptive_lb.posthoc import equalising_biases

CONTROLLER_KNOBS = frozenset(f.name for f in fields(ControllerConfig)) - {"name"}  # keywords -> controller.*
LOSS_KNOBS = frozenset(f.name for f in fields(LossConfig)) - {"name"}              # keywords -> loss.*
STATE_KEYS = ("controller", "action", "steps", "calibration_bias")                  # what state_dict() holds
# classes of a dataset named in a config, for from_config without num_classes
CONFIG_CLASSES = {"fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def tag(name: str) -> str:
    """A class name as a logger tag part: ``T-shirt/top`` -> ``T-shirt_top`` (a slash would nest the tag)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "_"


def per_class_stats(class_names: Sequence[str], **vectors: Sequence[float] | torch.Tensor) -> dict[str, float]:
    """Flat ``{"<key>/<class tag>": value}`` of per-class vectors ``(C,)``: ``weight=[...]`` -> ``weight/Shirt``."""
    return {f"{key}/{tag(name)}": float(v) for key, values in vectors.items()
            for name, v in zip(class_names, values.tolist() if isinstance(values, torch.Tensor) else values,
                               strict=True)}


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(N_r, ...)`` of every rank concatenated in rank order (ranks may hold different N_r); ``t`` itself
    without an initialised process group. Padded to the largest N_r for ``all_gather``, then trimmed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    world = dist.get_world_size()
    size = torch.tensor([len(t)], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


def _keyword_configs(controller: str | ControllerConfig, loss: str | LossConfig, epochs: int | None,
                     knobs: dict[str, Any]) -> tuple[ControllerConfig, LossConfig]:
    """The config sections the keywords describe, validated by the sections themselves (``ConfigError``)."""
    unknown = [k for k in knobs if k not in CONTROLLER_KNOBS | LOSS_KNOBS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(CONTROLLER_KNOBS | LOSS_KNOBS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else " (see ControllerConfig and LossConfig for the knobs)"
        raise ValueError(f"unknown keyword '{unknown[0]}'{hint}")
    plain = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in knobs.items()}

    def build(given: Any, section: type, names: frozenset[str]) -> Any:
        mine = {k: v for k, v in plain.items() if k in names}
        return dataclasses.replace(given, **mine) if isinstance(given, section) else section(name=given, **mine)

    parts = {"controller": build(controller, ControllerConfig, CONTROLLER_KNOBS),
             "loss": build(loss, LossConfig, LOSS_KNOBS)}
    if epochs is not None:  # the checks across sections (drw_epoch < epochs, warm-up longer than the run)
        RunConfig(train=TrainConfig(epochs=epochs), controller=parts["controller"], loss=parts["loss"])
    elif parts["controller"].name == "two_pass" or (parts["controller"].name == "drw"
                                                    and not parts["controller"].drw_epoch):
        raise ValueError(f"controller={parts['controller'].name} needs epochs= (epochs per pass, "
                         "or the run length drw switches at 80 % of)")
    return parts["controller"], parts["loss"]


def _as_keywords(message: str) -> str:
    """A config error in keyword terms: ``controller.gap_scale`` -> ``gap_scale``, ``loss.name`` -> ``loss``."""
    return re.sub(r"\b(controller|loss|train)\.(\w+)",
                  lambda m: m.group(1) if m.group(2) == "name" else m.group(2), message)


class RecallBalancer:
    """Per-class loss weights, logit offsets and augmentation intensities, updated every epoch from held-out recall.

    ``controller`` is a name (``damped``: the closed loop; ``cdb``, ``two_pass``, ``static``, ``drw``) or a
    ``ControllerConfig``; ``loss`` a name (``ce``, ``focal``, ``ldam``, ``logit_adjusted``, ``balanced_softmax``) or
    a ``LossConfig``. Any other keyword sets a field of either (``damping=0.3``, ``margin_gain=0.15``,
    ``gamma=2``), checked as the config checks it: an unknown keyword or a bad value is one ``ValueError`` naming
    it. ``train_counts`` ``(C,)``: training samples per class (count weights, LDAM, logit adjustment; default
    uniform). ``epochs``: epochs per pass (needed by ``two_pass`` and ``drw``). ``augment_ops``: the ops of
    ``augment`` (image ops, or the text ops ``swap``, ``drop``, ``insert``).
    """

    def __init__(self, num_classes: int, controller: str | ControllerConfig = "damped", *,
                 loss: str | LossConfig = "ce", class_names: Sequence[str] | None = None,
                 train_counts: torch.Tensor | Sequence[float] | None = None, epochs: int | None = None,
                 augment_ops: Sequence[str] = AUG_OPS, **knobs: Any) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"RecallBalancer: num_classes must be an int >= 2, got {num_classes!r}")
        try:
            ctrl, loss_cfg = _keyword_configs(controller, loss, epochs, knobs)
            self._setup(num_classes, ctrl, loss_cfg, epochs or 0, class_names, train_counts, augment_ops)
        except (UserError, ValueError) as exc:  # one ValueError in the keywords' names
            raise ValueError(f"RecallBalancer: {_as_keywords(str(exc))}") from None

    @classmethod
    def from_config(cls, config: str | Path | Sequence[str | Path] | RunConfig, *, num_classes: int | None = None,
                    class_names: Sequence[str] | None = None, train_counts: torch.Tensor | None = None,
                    overrides: Sequence[str] = ()) -> RecallBalancer:
        """The balancer of a run config (YAML file(s) with dotted ``overrides``, or a ``RunConfig``): its controller,
        loss, ``train.epochs``, ``augment.ops`` and ``posthoc`` sweeps. The class count comes from ``num_classes``,
        ``class_names``, ``train_counts`` or the config's dataset. Config problems raise ``ConfigError``."""
        from adaptive_lb.config_io import load_config

        cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
        d = cfg.data
        num = num_classes or (len(class_names) if class_names is not None else None) or (
            len(train_counts) if train_counts is not None else None) or CONFIG_CLASSES.get(d.name) or (
            d.synthetic.num_classes if d.name == "synthetic" else len(d.names.countries))
        if class_names is None and d.name == "fashion_mnist" and num == 10:
            from adaptive_lb.data.datasets import FASHION_MNIST_CLASSES

            class_names = FASHION_MNIST_CLASSES
        balancer = cls.__new__(cls)
        balancer._setup(num, cfg.controller, cfg.loss, cfg.train.epochs, class_names, train_counts, cfg.augment.ops)
        balancer.posthoc = cfg.posthoc
        return balancer

    def _setup(self, num_classes: int, controller: ControllerConfig, loss: LossConfig, epochs: int,
               class_names: Sequence[str] | None, train_counts: torch.Tensor | Sequence[float] | None,
               augment_ops: Sequence[str]) -> None:
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        counts = torch.ones(num_classes) if train_counts is None else torch.as_tensor(train_counts)
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {num_classes} classes")
        if counts.shape != (num_classes,) or not bool(((counts >= 0) & counts.isfinite()).all()):
            raise ValueError(f"train_counts must be {num_classes} finite counts >= 0, got {counts.tolist()}")
        unknown = [op for op in augment_ops if op not in AUG_OPS + TEXT_AUG_OPS]
        if unknown:
            raise ValueError(f"augment_ops: unknown op(s) {', '.join(unknown)}; use any of {', '.join(AUG_OPS)} "
                             f"(images) or {', '.join(TEXT_AUG_OPS)} (text)")
        text = bool(augment_ops) and all(op in TEXT_AUG_OPS for op in augment_ops)
        self.augmenter = TextAugmenter(augment_ops) if text else TensorAugmenter(augment_ops)
        self.config, self.loss_config, self.train_counts = controller, loss, counts
        self.controller = create_controller(controller, counts, epochs)
        self.loss_fn = create_loss(loss, counts)
        self.passes = self.controller.passes  # two_pass: 2, the caller trains a fresh model after `epochs` steps
        self.posthoc = PosthocConfig()        # sweeps and spread_weight of fit_calibration
        self.steps = 0                        # controller updates so far (the epoch index the controller sees)
        self.last_measurement: Measurement | None = None
        self.calibration_bias: torch.Tensor | None = None  # (C,) from fit_calibration
        self.calibration_choice: dict | None = None  # spread_weight=auto: the weight chosen and its select scores
        self._noise_checked = False           # warn_if_control_is_noisy runs once, at the first acting step
        self._aug = torch.zeros(num_classes).share_memory_()  # (C,) DataLoader workers read it: updated in place
        self._observed: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._set_action(self.controller.initial())

    # ------------------------------------------------------------------------------------------ the action
    def _set_action(self, action: ControlAction) -> None:
        """Make ``action`` current: kept on the CPU in float32, copied to other devices on first use."""
        cpu = ControlAction(*(t.detach().to("cpu", torch.float32) for t in action))
        self._on_device = {torch.device("cpu"): cpu}
        self._has_pair = bool(cpu.pair_margin.any())  # decided once here: no host sync per training batch
        self._has_mix = bool(cpu.pair_mix.any())
        self._aug.copy_(cpu.aug_intensity)

    @property
    def action(self) -> ControlAction:
        """The current action on the CPU (float32): what ``loss`` applies until the next ``step``."""
        return self._on_device[torch.device("cpu")]

    @action.setter
    def action(self, action: ControlAction) -> None:
        self._set_action(action)

    def action_on(self, device: torch.device | str) -> ControlAction:
        """The current action on ``device`` (copied once per action and device)."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = ControlAction(*(t.to(device) for t in self.action))
        return self._on_device[device]

    @property
    def class_weights(self) -> torch.Tensor:
        """Per-class loss weights ``(C,)``, mean 1 (a copy)."""
        return self.action.class_weights.clone()

    @property
    def logit_offsets(self) -> torch.Tensor:
        """Per-class offsets ``(C,)`` added to the training logits (negative = handicap in training; a copy)."""
        return self.action.logit_margin.clone()

    @property
    def pair_margins(self) -> torch.Tensor:
        """Pairwise margins ``(C, C)``: row y is added to the training logits of a class-y sample (a copy)."""
        return self.action.pair_margin.clone()

    @property
    def aug_intensity(self) -> torch.Tensor:
        """Per-class augmentation intensities ``(C,)`` in [0, 1], in shared memory and updated in place by ``step``:
        hand it to DataLoader workers once and they see every update. Read it, do not write it."""
        return self._aug

    # ------------------------------------------------------------------------------------------ the loop
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of logits ``(B, C)`` and targets ``(B,)`` under the current action:
        ``loss_fn(logits + offsets, y, w)`` with the pair margins of each sample's class added to its offsets."""
        a = self.action_on(logits.device)
        offsets = a.logit_margin + a.pair_margin[targets] if self._has_pair else a.logit_margin  # (B, C) or (C,)
        return self.loss_fn(logits + offsets, targets, a.class_weights)

    @property
    def blends(self) -> bool:
        """Whether the current action blends confused pairs (``controller.mix_gain``): then call ``blend``."""
        return self._has_mix

    def blend(self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Confused-pair mixup of a training batch ``(B, ...)`` (images, normalised or not: the blend is affine) at
        the current blend probabilities; labels stay ``targets``. Returns ``x`` itself when nothing is blended."""
        if not self._has_mix:
            return x
        return blend_confused_pairs(x, targets, self.action_on(x.device).pair_mix, self.config.mix_min, generator)

    def augment(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A batch augmented at each sample's class intensity: images ``(B, C_in, H, W)`` in [0, 1] (before
        normalising) or text codes ``(B, L)``; intensity 0 leaves a sample bit-exact."""
        return self.augmenter(x, self._aug.to(x.device)[targets])

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep held-out logits ``(B, C)`` and labels ``(B,)`` for the next ``step`` (call it once per batch)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes or labels.shape != (len(logits),):
            raise ValueError(f"observe needs logits (B, {self.num_classes}) and labels (B,); got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        self._observed.append((logits.detach().float(), labels.detach().long()))

    def step(self) -> dict[str, float]:
        """The controller update from everything observed since the last step (all ranks' when distributed);
        returns flat stats for any logger: ``recall/<class>`` (what was measured), ``weight/``, ``aug/``,
        ``offset/<class>`` (the action from now on) and ``recall_mean``, ``recall_std``, ``recall_worst``."""
        device = self._observed[0][0].device if self._observed else torch.device("cpu")
        logits = torch.cat([z for z, _ in self._observed]) if self._observed else torch.zeros(0, self.num_classes)
        labels = torch.cat([y for _, y in self._observed]) if self._observed else torch.zeros(0, dtype=torch.long)
        self._observed = []
        logits, labels = gather_rows(logits.to(device)), gather_rows(labels.to(device))
        if not len(labels):
            raise ValueError("step(): nothing observed since the last step; call observe(logits, labels) on "
                             "held-out batches first")
        return self.update(Measurement(logits, labels, self.num_classes))

    def update(self, measurement: Measurement) -> dict[str, float]:
        """``step`` for a measurement made elsewhere (``Measurement.from_tpr`` for recall counted by hand)."""
        self._set_action(self.controller.update(self.steps, measurement))
        if not self._noise_checked and self.steps >= self.config.warmup_epochs:  # once, when the loop starts acting
            self._noise_checked = True
            warn_if_control_is_noisy(self.config, measurement, self.class_names)
        self.steps += 1
        self.last_measurement = measurement
        return self.stats()

    def stats(self) -> dict[str, float]:
        """The last measurement's recall and the current action, flat (see ``step``)."""
        a = self.action
        out = per_class_stats(self.class_names, weight=a.class_weights, aug=a.aug_intensity, offset=a.logit_margin)
        if self.last_measurement is not None:
            tpr = self.last_measurement.tpr  # (C,) float64
            out.update(per_class_stats(self.class_names, recall=tpr), recall_mean=float(tpr.mean()),
                       recall_std=float(tpr.std(unbiased=False)), recall_worst=float(tpr.min()))
        return out

    # ------------------------------------------------------------------------------------------ calibration
    @torch.no_grad()
    def fit_calibration(self, logits: torch.Tensor, labels: torch.Tensor, *, sweeps: int | None = None,
                        spread_weight: float | str | None = None) -> torch.Tensor:
        """Fit per-class biases ``(C,)`` that even out recall of ``argmax(logits + b)`` on these held-out logits
        ``(N, C)`` (gathered over ranks; ``posthoc.equalising_biases``); ``calibrate`` adds them from now on.
        Fit them on a split the controller does not read (the trainer's ``select``), never on the test split.
        ``spread_weight="auto"`` (or ``posthoc.spread_weight: auto``) chooses it on these logits, cross-fitted
        (``frontier.choose_spread_weight``; the choice and its scores in ``calibration_choice``)."""
        z, y = gather_rows(logits.detach().float()).cpu(), gather_rows(labels.detach().long()).cpu()
        sweeps = self.posthoc.sweeps if sweeps is None else sweeps  # 0 is a value, not "unset"
        spread = self.posthoc.spread_weight if spread_weight is None else spread_weight
        self.calibration_choice = None
        if spread == "auto":  # chosen on these logits, cross-fitted
            spread, scores = choose_spread_weight(z, y, self.posthoc.candidates, self.posthoc.tolerance, sweeps)
            self.calibration_choice = {"spread_weight": spread, "candidates": scores}
        # 0, chosen or given, is the raw model (the frontier's spread weight 0), not biases maximising mean TPR
        self.calibration_bias = torch.zeros(self.num_classes) if spread == 0 else equalising_biases(z, y, sweeps,
                                                                                                      spread)
        return self.calibration_bias.clone()

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits + b`` with the fitted biases; ``logits`` itself before ``fit_calibration``."""
        return logits if self.calibration_bias is None else logits + self.calibration_bias.to(logits.device)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Controller state, current action, step count and calibration biases: tensors and plain values only."""
        return {"controller": self.controller.state_dict(), "action": [t.clone() for t in self.action],
                "steps": self.steps, "calibration_bias": self.calibration_bias}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly from ``state``; observations not yet stepped are dropped."""
        self.controller.load_state_dict(state["controller"])
        action = list(state["action"])
        if len(action) < len(ControlAction._fields):  # saved before confused-pair mixup existed: none
            action.append(torch.zeros(self.num_classes, self.num_classes))
        self._set_action(ControlAction(*action))
        self.steps, self.calibration_bias = int(state["steps"]), state.get("calibration_bias")
        self._observed = []
