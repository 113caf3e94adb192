"""Controllers: per-epoch held-out TPR in, per-class actuator settings out.

A controller is pure (tensors in, action out) and never holds the trainer, like timm's schedulers; the
trainer applies the action to the next epoch. Registered by name in ``CONTROLLERS``:

- ``static``: fixed weights: given, from training class counts (inverse_freq, effective_number, ...), or
  all ones (ERM);
- ``drw``: deferred re-weighting (Cao et al., LDAM-DRW): unit weights for ``drw_epoch`` epochs, then the
  count weights;
- ``two_pass``: the textbook remedy: a full ERM pass, weights ``W(tpr)`` from its final held-out TPR, then a
  fresh model trained again with them (``passes = 2``; the trainer restarts the model between passes);
  with ``first_pass_tpr`` (pass 1 already run, e.g. as an ERM run) it trains only the second pass;
- ``cdb``: class-wise difficulty-balanced weights ``(1 - tpr)^tau`` recomputed every epoch, undamped;
- ``damped``: ours, a damped, bounded update of three actuators from the held-out TPR gap
  ``e_c = (mean(tpr) - tpr_c) / gap_scale`` (positive for hard classes):
  ``log w <- (1-a) log w + a (log W*(tpr) + k_i * sum(e))``, bounded to ``[w_min, w_max]`` with mean 1, where
  ``W*`` is ``W(tpr)`` scaled to mean 1, then bounded (the same ``bounded_mean_one`` as two_pass);
  ``aug_c <- clip(aug_c + a * g * e_c, 0, 1)``;
  ``margin <- clip((1-a) margin - a k_m (e + k_i sum(e)), +-margin_max)`` (centred: only differences matter).
  Options that act on what the network learns (``adaptive_lb/actuators.py``): ``weight_law=dro`` (class-DRO
  weights instead of ``W(tpr)``), ``pair_gain`` (damped, bounded pairwise margins between confused classes,
  from the control split's confusion matrix), ``aug_groups=cluster`` (one intensity per confusion cluster) and
  ``bias_gain`` (an integral law moving the control split's equalising biases into training offsets).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from adaptive_lb.actuators import (
    cluster_mean,
    confusion_clusters,
    dro_step,
    dro_weights,
    pair_margin_target,
    pair_mix_target,
)
from adaptive_lb.config import ControllerConfig
from adaptive_lb.errors import ConfigError, ConfigWarning, DataError
from adaptive_lb.metrics import Measurement
from adaptive_lb.weighting import COUNT_WEIGHTS, TPR_WEIGHTS, bounded_mean_one, normalise_mean_one


class ControlAction(NamedTuple):
    """What the trainer applies for the next epoch."""

    class_weights: torch.Tensor  # (C,) finite, > 0, mean 1
    aug_intensity: torch.Tensor  # (C,) in [0, 1]; 0 = no augmentation
    logit_margin: torch.Tensor   # (C,) added to training logits (negative = handicap); 0 when unused
    pair_margin: torch.Tensor    # (C, C) symmetric, zero diagonal: row y is added to the training logits of a sample
    # of class y (a margin between y and each class it is confused with); 0 when unused
    pair_mix: torch.Tensor       # (C, C) row i: probability that a training image of class i is blended with one of
    # class j (confused-pair mixup, controller.mix_gain); rows sum to <= 1; 0 when unused


class Controller(Protocol):
    """Per-epoch update from the control split's ``Measurement`` (logits and labels; TPR, confusion matrix,
    soft recall and equalising biases derive from it)."""

    passes: int  # full training runs; the trainer starts a fresh model for each

    def initial(self) -> ControlAction: ...
    def update(self, epoch: int, m: Measurement) -> ControlAction: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def neutral_action(num_classes: int) -> ControlAction:
    """Unit weights, no augmentation, no margins: plain ERM."""
    return ControlAction(torch.ones(num_classes), torch.zeros(num_classes), torch.zeros(num_classes),
                         torch.zeros(num_classes, num_classes), torch.zeros(num_classes, num_classes))


def top_pairs(pair: torch.Tensor, k: int | None = None, symmetric: bool = True) -> list[list]:
    """The largest entries of a ``(C, C)`` matrix as ``[[i, j, value], ...]`` (value > 0; i < j when ``symmetric``),
    at most ``k`` (default 2C) of them: what an epoch record keeps (a full matrix would be C^2 numbers)."""
    upper = torch.triu(pair.detach().float().cpu(), diagonal=1) if symmetric else pair.detach().float().cpu()
    nonzero = int((upper > 0).sum())
    if not nonzero:
        return []
    values, flat = upper.flatten().topk(min(k or 2 * len(pair), nonzero))
    num = len(pair)
    return [[int(f) // num, int(f) % num, round(float(v), 4)] for v, f in zip(values, flat, strict=True)]


def check_measurement(m: Measurement, num_classes: int) -> torch.Tensor:
    """The measurement's per-class TPR ``(C,)`` float64, after checking it covers the controller's classes."""
    if m.num_classes != num_classes:
        raise DataError(f"controller got a measurement of {m.num_classes} classes; expected {num_classes}: the "
                        "data and the controller disagree on classes")
    return m.tpr  # validated by Measurement: every class measured, finite, in [0, 1]


class StaticController:
    """Fixed per-class weights (normalised to mean 1), whatever the TPR; all ones is ERM.

    With ``switch_epoch`` k > 0 the weights apply from the (k+1)-th epoch on and unit weights before it
    (deferred re-weighting).
    """

    passes = 1

    def __init__(self, num_classes: int, weights: torch.Tensor | None = None, switch_epoch: int = 0) -> None:
        self.num_classes, self.switch_epoch = num_classes, switch_epoch
        w = torch.ones(num_classes) if weights is None else weights.float()
        self.weighted = neutral_action(num_classes)._replace(class_weights=normalise_mean_one(w))

    def initial(self) -> ControlAction:
        return self._at(0)

    def update(self, epoch: int, m: Measurement) -> ControlAction:
        check_measurement(m, self.num_classes)  # same contract as the others, though unused
        return self._at(epoch + 1)

    def _at(self, epoch: int) -> ControlAction:
        """The action for 0-based epoch ``epoch``."""
        return self.weighted if epoch >= self.switch_epoch else neutral_action(self.num_classes)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _static_weights(cfg: ControllerConfig, train_counts: torch.Tensor) -> torch.Tensor | None:
    """The fixed weights of ``static``/``drw``: ``cfg.weights``, count weights, or None (all ones)."""
    num_classes = len(train_counts)
    if cfg.count_weights != "none":
        return COUNT_WEIGHTS[cfg.count_weights](train_counts, cfg.beta)
    if cfg.weights and len(cfg.weights) != num_classes:
        raise ConfigError(f"controller.weights has {len(cfg.weights)} entries but the data has {num_classes} "
                          "classes: give one weight per class or [] for all ones")
    return torch.tensor(cfg.weights) if cfg.weights else None


class TwoPassController:
    """Algorithm 1 of the seed paper: ERM for a pass, then ``W(tpr)`` of its final held-out TPR for pass 2."""

    def __init__(self, num_classes: int, cfg: ControllerConfig, epochs_per_pass: int) -> None:
        self.cfg, self.num_classes, self.epochs_per_pass = cfg, num_classes, epochs_per_pass
        self.action = neutral_action(num_classes)
        given = cfg.first_pass_tpr  # pass 1 already run (e.g. an ERM run of the same config and seed): pass 2 only
        self.passes = 1 if given else 2
        if given:
            if len(given) != num_classes:
                raise ConfigError(f"controller.first_pass_tpr has {len(given)} values for {num_classes} classes: "
                                  "give the first pass's final held-out TPR of every class")
            self._fix_weights(torch.tensor(given, dtype=torch.float64))

    def _fix_weights(self, tpr: torch.Tensor) -> None:
        """The second pass's weights ``W(tpr)`` of the first pass's final held-out TPR ``(C,)`` float64."""
        w = TPR_WEIGHTS[self.cfg.weight_fn](tpr, self.cfg.exponent)
        self.action = self.action._replace(class_weights=bounded_mean_one(w, self.cfg.w_min, self.cfg.w_max).float())

    def initial(self) -> ControlAction:
        return self.action

    def update(self, epoch: int, m: Measurement) -> ControlAction:
        tpr = check_measurement(m, self.num_classes)
        if self.passes == 2 and epoch == self.epochs_per_pass - 1:  # end of pass 1: fix the weights for pass 2
            self._fix_weights(tpr)
        return self.action

    def state_dict(self) -> dict:
        return {"class_weights": self.action.class_weights.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.action = self.action._replace(class_weights=state["class_weights"].clone())


class DampedController:
    """The closed loop (see the module docstring); ``cdb`` is this with damping 1 and weights only."""

    passes = 1
    STATE = ("log_w", "aug", "margin", "integral", "log_q", "pair", "bias_offset", "mix")

    def __init__(self, num_classes: int, cfg: ControllerConfig) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        zeros = torch.zeros(num_classes, dtype=torch.float64)
        self.log_w = zeros.clone()        # (C,) log class weights
        self.aug = torch.full((num_classes,), cfg.aug_init, dtype=torch.float64)  # (C,) intensities
        self.margin = zeros.clone()       # (C,) logit offsets of the gap law
        self.integral = zeros.clone()     # (C,) accumulated normalised gap
        self.log_q = zeros.clone()        # (C,) class-DRO log distribution (weight_law=dro)
        self.pair = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # (C, C) pairwise margins
        self.bias_offset = zeros.clone()  # (C,) integral of -bias_gain x equalising biases
        self.mix = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # (C, C) confused-pair blend probs
        # anti-windup: past this the integral alone already pins a weight to its bound
        self.integral_max = math.log(cfg.w_max / cfg.w_min) / cfg.integral_gain if cfg.integral_gain else 0.0

    def initial(self) -> ControlAction:
        return self._action()

    def update(self, epoch: int, m: Measurement) -> ControlAction:
        tpr = check_measurement(m, self.num_classes)
        c = self.cfg
        if epoch < c.warmup_epochs:
            return self._action()
        gap = (tpr.mean() - tpr) / c.gap_scale  # (C,) > 0 for classes below the mean
        self.integral = (self.integral + gap).clamp(-self.integral_max, self.integral_max)
        self._update_weights(tpr, gap)
        self._update_augmentation(gap, m)
        self._update_offsets(gap, m)
        return self._action()

    def _update_weights(self, tpr: torch.Tensor, gap: torch.Tensor) -> None:
        c = self.cfg
        if c.weight_law == "dro":  # exponentiated gradient: its step size eta is the damping
            self.log_q = dro_step(self.log_q, gap, c.dro_eta, c.dro_deadband)
            self.log_w = bounded_mean_one(dro_weights(self.log_q, c.dro_floor), c.w_min, c.w_max).log()
            return
        # the target is normalised to mean 1 before it is bounded: clamping raw (1 - tpr)^tau (~0.05-0.25) to
        # [w_min, w_max] first gave every class above TPR 1 - w_min the same weight
        target = bounded_mean_one(TPR_WEIGHTS[c.weight_fn](tpr, c.exponent), c.w_min, c.w_max).log()
        log_w = (1 - c.damping) * self.log_w + c.damping * (target + c.integral_gain * self.integral)
        self.log_w = bounded_mean_one(log_w.clamp(-50, 50).exp(), c.w_min, c.w_max).log()

    def _update_augmentation(self, gap: torch.Tensor, m: Measurement) -> None:
        c = self.cfg
        if not c.aug_gain:
            return
        if c.aug_groups == "cluster":  # one intensity per confusion cluster: no cue between confused classes
            clusters = confusion_clusters(m.confusion, c.cluster_threshold)
            self.aug = cluster_mean((self.aug + c.damping * c.aug_gain * cluster_mean(gap, clusters)).clamp(0, 1),
                                    clusters)
        else:
            self.aug = (self.aug + c.damping * c.aug_gain * gap).clamp(0, 1)

    def _update_offsets(self, gap: torch.Tensor, m: Measurement) -> None:
        c = self.cfg
        # margins follow the same damped law as the weights, towards an offset proportional to the gap
        # (plus the integral): accumulating raw per-epoch gaps instead turned mid-training TPR swings into
        # +-1 logit offsets and collapsed whole classes (bench/README.md)
        m_target = -c.margin_gain * (gap + c.integral_gain * self.integral)
        margin = (1 - c.damping) * self.margin + c.damping * (m_target - m_target.mean())
        self.margin = margin.clamp(-c.margin_max, c.margin_max)
        if c.bias_gain:  # push what calibration would add into training: b > 0 (boost) -> a negative offset
            b = m.equalising_biases().double()
            self.bias_offset = (self.bias_offset - c.bias_gain * (b - b.mean())).clamp(-c.margin_max, c.margin_max)
        if c.pair_gain:
            target = pair_margin_target(m.confusion, c.pair_gain, c.pair_deadband, c.pair_max)
            self.pair = ((1 - c.damping) * self.pair + c.damping * target).clamp(0, c.pair_max)
        if c.mix_gain:  # convex combination of row-substochastic matrices: rows stay <= 1
            self.mix = (1 - c.damping) * self.mix + c.damping * pair_mix_target(gap, m.confusion, c.mix_gain, c.mix_cap)

    def _action(self) -> ControlAction:
        margin = (self.margin + self.bias_offset).clamp(-self.cfg.margin_max, self.cfg.margin_max)
        return ControlAction(self.log_w.exp().float(), self.aug.float(), margin.float(), self.pair.float(),
                             self.mix.float())

    def state_dict(self) -> dict:
        return {k: getattr(self, k).clone() for k in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self.STATE:
            if k in state:  # checkpoints from before an actuator existed keep its neutral start
                setattr(self, k, state[k].clone().double())


def _cdb(cfg: ControllerConfig, train_counts: torch.Tensor, epochs: int) -> DampedController:
    """The published CDB baseline: weights ``(1 - tpr)^tau`` every epoch, no damping, no other actuator."""
    return DampedController(len(train_counts), as_built(cfg))


def as_built(cfg: ControllerConfig) -> ControllerConfig:
    """``cfg`` as its controller reads it: ``static``/``drw`` read only their weights (every other field is put at
    its default), ``cdb`` runs with the published settings in place of the loop's. Two configs with the same
    ``as_built`` build the same controller: bench/store.py keys stored runs by it, so editing a loop setting of a
    shared base config does not retrain the ERM rows built on it."""
    if cfg.name in ("static", "drw"):
        return ControllerConfig(name=cfg.name, weights=cfg.weights, count_weights=cfg.count_weights, beta=cfg.beta,
                                drw_epoch=cfg.drw_epoch)
    if cfg.name == "cdb":
        return dataclasses.replace(cfg, weight_fn="cdb", weight_law="damped", damping=1.0, integral_gain=0.0,
                                   aug_gain=0.0, margin_gain=0.0, pair_gain=0.0, bias_gain=0.0, mix_gain=0.0)
    return cfg


CONTROLLERS = {
    "static": lambda cfg, n, epochs: StaticController(len(n), _static_weights(cfg, n)),
    "drw": lambda cfg, n, epochs: StaticController(len(n), _static_weights(cfg, n),
                                                   cfg.drw_epoch or max(1, round(0.8 * epochs))),
    "two_pass": lambda cfg, n, epochs: TwoPassController(len(n), cfg, epochs),
    "cdb": _cdb,
    "damped": lambda cfg, n, epochs: DampedController(len(n), cfg),
}


def warn_if_control_is_noisy(cfg: ControllerConfig, m: Measurement, class_names: Sequence[str]) -> bool:
    """One ``ConfigWarning`` when a class's measured TPR is too noisy for ``cfg.gap_scale``; True if it warned.

    A TPR p measured on n control images has the binomial standard error ``sqrt(p (1 - p) / n)``; above
    ``gap_scale / 2`` half a unit of the damped loop's error ``(mean - tpr_c) / gap_scale`` is noise, and the
    loop would chase it. Read from the measurement itself (not the worst case p = 0.5, which would ask for
    400 images per class at 0.05 even where every class sits at TPR 0.9). Only ``damped`` reads ``gap_scale``.
    """
    if cfg.name != "damped":
        return False
    tpr, n = m.tpr, m.counts.clamp_min(1)                # (C,), (C,) float64
    noise = (tpr * (1 - tpr) / n).sqrt()                  # (C,) binomial standard error of each class's TPR
    noisy = torch.nonzero(noise > cfg.gap_scale / 2)[:, 0]
    if not len(noisy):
        return False
    worst = int(noisy[noise[noisy].argmax()])
    p, count, others = float(tpr[worst]), int(n[worst]), len(noisy) - 1
    need = math.ceil(4 * p * (1 - p) / cfg.gap_scale ** 2 - 1e-9)
    who = f"class '{class_names[worst]}'" + (f" (and {others} more)" if others else "")
    # four decimals: a TPR of 224/300 has 0.0251 against 0.0250, which three would print as "0.025 above 0.025"
    warnings.warn(f"{who} has {count} control (held-out) images at TPR {p:.3f}: its standard error "
                  f"sqrt(p(1-p)/n) = {float(noise[worst]):.4f} is above controller.gap_scale/2 = "
                  f"{cfg.gap_scale / 2:.4f}, so the loop would chase noise; raise data.heldout_fraction (it needs "
                  f"{need} control images at this TPR) or controller.gap_scale (to at least "
                  f"{2 * float(noise[worst]):.4f})", ConfigWarning, stacklevel=2)
    return True


def create_controller(cfg: ControllerConfig, train_counts: torch.Tensor, epochs: int) -> Controller:
    """Build controller ``cfg.name`` for training class counts ``(C,)`` and ``epochs`` epochs per pass."""
    if cfg.name not in CONTROLLERS:
        raise ConfigError(f"controller.name: unknown controller '{cfg.name}'; use one of {', '.join(CONTROLLERS)}")
    if cfg.weight_fn not in TPR_WEIGHTS:
        raise ConfigError(f"controller.weight_fn: unknown weight function '{cfg.weight_fn}'; "
                          f"use one of {', '.join(TPR_WEIGHTS)}")
    return CONTROLLERS[cfg.name](cfg, train_counts, epochs)
