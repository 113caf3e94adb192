"""The actuators that change what the network learns (adaptive_lb/actuators.py) and the controller laws using them:
hand-computed values, then direction (the hard class gains, confused pairs get margins, clusters share one
intensity, the calibration's biases move into training offsets with the right sign)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from adaptive_lb.actuators import (
    blend_confused_pairs,
    cluster_mean,
    confusion_clusters,
    confusion_rates,
    dro_step,
    dro_weights,
    pair_margin_target,
    pair_mix_target,
)
from adaptive_lb.config import ControllerConfig
from adaptive_lb.controllers import create_controller
from adaptive_lb.losses import weighted_cross_entropy
from adaptive_lb.metrics import Measurement

# 5 classes, 100 samples each: 0<->1 confused (20 and 10 of 100), 2<->3 confused (5 and 5), 4 alone
CM = torch.tensor([[80, 20, 0, 0, 0],
                   [10, 90, 0, 0, 0],
                   [0, 0, 95, 5, 0],
                   [0, 0, 5, 95, 0],
                   [0, 0, 0, 0, 100]])


def measurement_of(cm: torch.Tensor) -> Measurement:
    """Logits and labels whose argmax confusion matrix is exactly ``cm``."""
    labels, preds = [], []
    for i, row in enumerate(cm.tolist()):
        for j, n in enumerate(row):
            labels += [i] * n
            preds += [j] * n
    return Measurement(F.one_hot(torch.tensor(preds), len(cm)).float(), torch.tensor(labels))


def test_confusion_rates_are_symmetric_shares_by_hand():
    r = confusion_rates(CM)
    assert r[0, 1] == r[1, 0] == pytest.approx(0.15) and r[2, 3] == pytest.approx(0.05)
    assert r[0, 4] == 0 and not r.diagonal().any()


def test_dro_step_and_weights_by_hand():
    gap = torch.tensor([2.0, -1.0, 0.5, -1.5], dtype=torch.float64)
    log_q = dro_step(torch.zeros(4, dtype=torch.float64), gap, eta=0.5, deadband=1.0)
    raw = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # only class 0 is past the dead band
    assert log_q.tolist() == pytest.approx((raw - raw.mean()).tolist())
    w = dro_weights(log_q, floor=0.3)
    soft = torch.softmax(raw, 0)
    assert w.tolist() == pytest.approx((4 * (0.7 * soft + 0.3 / 4)).tolist())
    assert w.mean().item() == pytest.approx(1.0) and w.min().item() >= 0.3 - 1e-12
    assert dro_weights(log_q, floor=1.0).tolist() == pytest.approx([1.0] * 4)  # floor 1 = ERM


def test_pair_margin_target_and_clusters_by_hand():
    target = pair_margin_target(CM, gain=10.0, deadband=0.01, cap=1.0)
    assert target[0, 1] == target[1, 0] == 1.0  # 10 * (0.15 - 0.01) = 1.4, capped
    assert target[2, 3] == pytest.approx(0.4)   # 10 * (0.05 - 0.01)
    assert target[0, 2] == 0 and not target.diagonal().any()
    assert confusion_clusters(CM, 0.02).tolist() == [0, 0, 2, 2, 4]
    assert confusion_clusters(CM, 0.1).tolist() == [0, 0, 2, 3, 4]
    chain = torch.tensor([[9, 1, 0], [0, 9, 1], [0, 0, 10]])  # 0-1 and 1-2 linked: one cluster through 1
    assert confusion_clusters(chain, 0.04).tolist() == [0, 0, 0]
    values = torch.tensor([1.0, 3.0, 2.0, 4.0, 7.0])
    assert cluster_mean(values, torch.tensor([0, 0, 2, 2, 4])).tolist() == [2.0, 2.0, 3.0, 3.0, 7.0]


def test_pairwise_margin_loss_is_the_published_formula():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, 0.2]])
    y = torch.tensor([0, 1])
    delta = torch.tensor([[0.0, 0.7, 0.0], [0.7, 0.0, 0.3], [0.0, 0.3, 0.0]])
    got = weighted_cross_entropy(z + delta[y], y, torch.ones(3))
    want = []
    for zi, yi in zip(z, y, strict=True):
        others = sum(math.exp(zi[j] + delta[yi, j]) for j in range(3) if j != yi)
        want.append(-math.log(math.exp(zi[yi]) / (math.exp(zi[yi]) + others)))
    assert got.item() == pytest.approx(sum(want) / 2)


LOOP = ControllerConfig(name="damped", warmup_epochs=0, damping=0.5, margin_gain=0.0)


def run(cfg: ControllerConfig, m: Measurement, epochs: int = 4):
    ctl = create_controller(cfg, torch.full((5,), 100), 10)
    return [ctl.update(e, m) for e in range(epochs)]


def test_dro_raises_the_hard_class_every_epoch_within_bounds():
    actions = run(dataclasses.replace(LOOP, weight_law="dro", dro_eta=0.3), measurement_of(CM))
    hard = [a.class_weights[0].item() for a in actions]  # class 0 has the lowest TPR (0.80)
    assert hard == sorted(hard) and hard[-1] > hard[0] > 1.0
    assert all(abs(a.class_weights.mean().item() - 1) < 1e-5 and a.class_weights.min() >= 0.2 - 1e-6
               for a in actions)


def test_pair_margins_grow_on_confused_pairs_only():
    actions = run(dataclasses.replace(LOOP, pair_gain=5.0, pair_max=2.0), measurement_of(CM))
    first, last = actions[0].pair_margin, actions[-1].pair_margin
    assert last[0, 1] > first[0, 1] > last[2, 3] > 0  # damped towards 5 * 0.14 = 0.7 and 5 * 0.04 = 0.2
    assert last[0, 1] == pytest.approx(0.7 * (1 - 0.5 ** 4), abs=1e-6)
    assert last[0, 4] == 0 and torch.equal(last, last.t())


def test_cluster_augmentation_shares_one_intensity_inside_each_cluster():
    actions = run(dataclasses.replace(LOOP, aug_gain=0.5, aug_groups="cluster"), measurement_of(CM))
    aug = actions[-1].aug_intensity
    assert aug[0] == aug[1] > 0 and aug[2] == aug[3]  # confused classes cannot be told apart by augmentation
    per_class = run(dataclasses.replace(LOOP, aug_gain=0.5), measurement_of(CM))[-1].aug_intensity
    assert per_class[0] != per_class[1]  # the per-class law would give the harder of the pair more


def test_bias_integral_moves_calibration_into_negative_offsets_for_the_class_it_would_boost():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(200)
    logits = F.one_hot(labels, 3).float() * 2.0 + torch.randn(600, 3, generator=g)
    logits[:, 2] -= 1.5  # class 2 under-predicted: calibration would raise its logit
    ctl = create_controller(ControllerConfig(name="damped", warmup_epochs=0, margin_gain=0.0, bias_gain=0.5),
                            torch.full((3,), 100), 10)
    offsets = [ctl.update(e, Measurement(logits, labels)).logit_margin[2].item() for e in range(3)]
    assert offsets[0] < 0 and offsets[2] < offsets[1] < offsets[0]  # an integral: it keeps pushing


def test_pair_mix_target_by_hand():
    # TPR 0.80, 0.90, 0.95, 0.95, 1.00: mean 0.92, gaps / 0.05 = 2.4, 0.4, -0.6, -0.6, -1.6
    tpr = torch.tensor([0.80, 0.90, 0.95, 0.95, 1.00], dtype=torch.float64)
    target = pair_mix_target((tpr.mean() - tpr) / 0.05, CM, gain=0.1, cap=0.2)
    expect = torch.zeros(5, 5, dtype=torch.float64)
    expect[0, 1], expect[1, 0] = 0.2, 0.04  # class 0: 0.24 capped at 0.2, all on class 1 (its only confusion)
    assert torch.allclose(target, expect)


def test_blend_keeps_labels_and_blends_only_hard_class_images_with_their_confuser():
    y = torch.tensor([0] * 50 + [1] * 50 + [2] * 20)
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()  # every image is its class index, constant
    mix = torch.zeros(3, 3)
    mix[0, 1] = 1.0  # every class-0 image is blended with a class-1 image
    gen = torch.Generator().manual_seed(0)
    out = blend_confused_pairs(x, y, mix, mix_min=0.6, generator=gen)
    zero = out[y == 0].flatten()
    assert ((zero > 0) & (zero <= 0.4 + 1e-6)).all()  # lam x_0 + (1 - lam) x_1 = 1 - lam, lam in [0.6, 1]
    assert torch.equal(out[y != 0], x[y != 0])  # the other classes untouched
    assert torch.equal(blend_confused_pairs(x, y, torch.zeros(3, 3), 0.6, gen), x)  # nothing to blend
    alone = y != 1  # the partner class missing from the batch: nothing blended
    assert torch.equal(blend_confused_pairs(x[alone], y[alone], mix, 0.6, gen), x[alone])


def test_pair_mixing_grows_on_the_hard_class_towards_its_confuser_only():
    actions = run(dataclasses.replace(LOOP, mix_gain=0.1, mix_cap=0.2), measurement_of(CM))
    first, last = actions[0].pair_mix, actions[-1].pair_mix
    assert last[0, 1] > first[0, 1] > 0 and last[0, 1] == pytest.approx(0.2 * (1 - 0.5 ** 4), abs=1e-6)
    assert last.sum() == pytest.approx(float(last[0, 1] + last[1, 0]))  # nothing outside the confused pair
    assert (last.sum(dim=1) <= 0.2 + 1e-6).all()
