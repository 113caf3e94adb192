import math

import pytest
import torch

from adaptive_lb.weighting import TPR_FLOOR, TPR_WEIGHTS, bounded_mean_one, cdb, exp_gap, power_ratio

TPR = torch.tensor([0.5, 1.0])  # mean 0.75


@pytest.mark.parametrize("fn, arg, expected", [
    (power_ratio, 1.0, [1.5, 0.75]),              # avg / s
    (power_ratio, 2.0, [2.25, 0.5625]),           # (avg / s)^2
    (power_ratio, 0.0, [1.0, 1.0]),               # exponent 0: uniform
    (cdb, 1.0, [0.5, TPR_FLOOR]),                 # 1 - s, floored for a perfect class
    (cdb, 2.0, [0.25, TPR_FLOOR**2]),
    (exp_gap, 1.0, [math.exp(1 / 3), math.exp(-1 / 3)]),  # exp((avg - s) / avg)
])
def test_weight_functions_match_hand_computed_values(fn, arg, expected):
    assert fn(TPR, arg).tolist() == pytest.approx(expected, rel=1e-6)


def test_power_ratio_is_the_seed_papers_form():
    tpr = torch.tensor([0.6, 0.8, 0.95])
    avg = tpr.mean()
    assert torch.allclose(power_ratio(tpr, 1.7), (1 - (tpr - avg) / tpr) ** 1.7)


@pytest.mark.parametrize("name", sorted(TPR_WEIGHTS))
@pytest.mark.parametrize("tpr", [[0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.99]])
def test_every_weight_function_is_finite_positive_and_favours_hard_classes(name, tpr):
    tpr = torch.tensor(tpr)
    w = TPR_WEIGHTS[name](tpr, 1.5)
    assert torch.isfinite(w).all() and (w > 0).all()
    order = torch.argsort(tpr)
    assert (w[order][1:] <= w[order][:-1] + 1e-9).all(), "a harder class never gets a smaller weight"


def test_bounded_mean_one_hand_computed():
    # c*[1,1,1,100] clamped to [0.2, 5] with mean 1 -> c = 0.034: [0.2, 0.2, 0.2, 3.4]
    w = bounded_mean_one(torch.tensor([1.0, 1.0, 1.0, 100.0]), 0.2, 5.0)
    assert w.tolist() == pytest.approx([0.2, 0.2, 0.2, 3.4], rel=1e-5)


@pytest.mark.parametrize("w", [[1e-9, 1e9, 1.0], [3.0, 3.0], [0.5, 2.0, 7.0, 1e-3], [1.0]])
@pytest.mark.parametrize("bounds", [(0.2, 5.0), (1.0, 1.0), (0.5, 1.5), (1e-3, 1e3)])
def test_bounded_mean_one_keeps_mean_bounds_and_order(w, bounds):
    w = torch.tensor(w)
    out = bounded_mean_one(w, *bounds)
    assert out.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert out.min() >= bounds[0] - 1e-5 and out.max() <= bounds[1] + 1e-5
    order = torch.argsort(w)
    assert (out[order][1:] >= out[order][:-1] - 1e-6).all()
