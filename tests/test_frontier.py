"""The frontier maths (adaptive_lb/frontier.py): Pareto fronts, select-only picks, paired bootstrap, sweeps."""

import pytest
import torch
import torch.nn.functional as F

from adaptive_lb.frontier import (
    calibration_sweep,
    choose_spread_weight,
    cross_fitted_predictions,
    paired_bootstrap,
    pareto_front,
    pick_on_select,
    split_metrics,
    stratified_folds,
    worst_at_accuracy,
)
from adaptive_lb.posthoc import equalising_biases


def test_worst_at_accuracy_interpolates_between_frontier_points_by_hand():
    front = [(0.90, 0.82), (0.92, 0.75), (0.93, 0.70)]
    assert worst_at_accuracy(front, 0.91) == pytest.approx(0.785)    # halfway from 0.82 to 0.75
    assert worst_at_accuracy(front, 0.925) == pytest.approx(0.725)
    assert worst_at_accuracy(front, 0.92) == pytest.approx(0.75)     # on a point
    assert worst_at_accuracy(front, 0.895) is None and worst_at_accuracy(front, 0.931) is None  # nothing to match
    assert worst_at_accuracy([(0.9, 0.8)], 0.9) == 0.8 and worst_at_accuracy([], 0.9) is None


def test_pareto_front_by_hand():
    pts = [(0.90, 0.70), (0.92, 0.60), (0.89, 0.65), (0.91, 0.70), (0.85, 0.80), (0.92, 0.55)]
    # (0.90, 0.70) is beaten by (0.91, 0.70); (0.89, 0.65) by both; (0.92, 0.55) by (0.92, 0.60)
    assert pareto_front(pts) == [4, 3, 1]


def test_pick_on_select_never_reads_test():
    points = [{"select": {"accuracy": 0.92, "worst_tpr": 0.70}, "test": {"worst_tpr": 0.99}},
              {"select": {"accuracy": 0.91, "worst_tpr": 0.80}, "test": {"worst_tpr": 0.10}},
              {"select": {"accuracy": 0.88, "worst_tpr": 0.90}, "test": {"worst_tpr": 0.99}}]
    assert pick_on_select(points, 0.905, "select") == 1  # best select worst-class TPR within the accuracy floor
    assert pick_on_select(points, 0.95, "select") == 0   # nothing qualifies: the most accurate point
    # by default the cross-fitted select scores decide: point 1's in-sample gain does not survive them
    for p, cv in zip(points, ({"accuracy": 0.92, "worst_tpr": 0.70}, {"accuracy": 0.90, "worst_tpr": 0.72},
                              {"accuracy": 0.88, "worst_tpr": 0.75}), strict=True):
        p["select_cv"] = cv
    assert pick_on_select(points, 0.905) == 0


def test_stratified_folds_halve_every_class():
    labels = torch.tensor([0] * 7 + [1] * 4 + [2] * 1)
    fold = stratified_folds(labels, 2, seed=3)
    assert [int(((labels == c) & (fold == 0)).sum()) for c in range(3)] == [4, 2, 1]  # dealt out in turn
    assert torch.equal(fold, stratified_folds(labels, 2, seed=3)) and set(fold.tolist()) == {0, 1}


def test_cross_fitting_removes_the_optimism_of_an_in_sample_calibration():
    """Logits with no class signal in the biases: fitting biases on the same samples "finds" a gain on them
    that the cross-fitted score (biases fitted on the other half) does not."""
    labels = torch.arange(10).repeat_interleave(60)
    gains = []
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(600, 10, generator=g) + F.one_hot(labels, 10) * 1.0
        in_sample = split_metrics((logits + equalising_biases(logits, labels, 8, 1.0)).argmax(1), labels, 10)
        cross = split_metrics(cross_fitted_predictions(logits, labels, 8, 1.0), labels, 10)
        raw = split_metrics(logits.argmax(1), labels, 10)
        assert in_sample["worst_tpr"] > raw["worst_tpr"] and in_sample["tpr_std"] < cross["tpr_std"]
        gains.append(in_sample["worst_tpr"] - cross["worst_tpr"])
    assert sum(gains) / len(gains) > 0.04  # seen: 0.033, 0.050, 0.100, 0.067


def test_split_metrics_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    m = split_metrics(pred, labels, 3)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["worst_tpr"] == 0.5
    assert m["tpr_std"] == pytest.approx(torch.tensor([0.5, 1.0, 0.5]).std(unbiased=False).item())


def test_paired_bootstrap_brackets_a_real_difference_and_zero_for_a_copy():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(250)
    good = [torch.where(torch.rand(1000, generator=g) < 0.9, labels, (labels + 1) % 4) for _ in range(3)]
    # b: the same predictions but class 3 wrong twice as often
    bad = [torch.where((labels == 3) & (torch.rand(1000, generator=g) < 0.15), (labels + 1) % 4, p) for p in good]
    diff = paired_bootstrap(good, bad, labels, "worst_tpr", draws=300)
    assert diff["low"] > 0 and diff["low"] <= diff["difference"] <= diff["high"]
    same = paired_bootstrap(good, good, labels, "accuracy", draws=50)
    assert same["difference"] == same["low"] == same["high"] == 0.0


def test_calibration_sweep_raw_point_is_the_model_and_calibration_evens_select():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(200)
    logits = F.one_hot(labels, 3).float() * 2.0 + torch.randn(600, 3, generator=g)
    logits[:, 2] -= 1.5  # class 2 under-predicted
    test_labels = torch.arange(3).repeat_interleave(100)
    test_logits = F.one_hot(test_labels, 3).float() * 2.0 + torch.randn(300, 3, generator=g)
    test_logits[:, 2] -= 1.5
    raw, calibrated = calibration_sweep((logits, labels), (test_logits, test_labels), (0.0, 1.0))
    assert raw["bias"] == [0.0, 0.0, 0.0] and torch.equal(raw["test_pred"], test_logits.argmax(dim=1))
    assert calibrated["select"]["worst_tpr"] > raw["select"]["worst_tpr"] + 0.1
    assert calibrated["test"]["worst_tpr"] > raw["test"]["worst_tpr"]  # the biases carry over to unseen data
    # a real under-prediction survives cross-fitting; the raw point has nothing to fit
    assert calibrated["select_cv"]["worst_tpr"] > raw["select_cv"]["worst_tpr"] + 0.1
    assert raw["select_cv"] == raw["select"]


def _shifted_logits(per_class: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fair 10-class classifier whose class 3 is under-predicted by a constant ``shift`` (a bias to undo)."""
    labels = torch.arange(10).repeat_interleave(per_class)
    logits = torch.randn(len(labels), 10, generator=torch.Generator().manual_seed(seed)) + F.one_hot(labels, 10) * 2.0
    logits[:, 3] -= shift
    return logits, labels


def test_auto_spread_weight_calibrates_a_biased_model_and_keeps_a_tiny_split_raw():
    """The per-run choice (posthoc.spread_weight=auto): a real bias gap is corrected on every seed; on 8 images
    per class with no gap, biases fitted on one half do not help the other, so the raw model is kept."""
    for seed in range(3):
        chosen, points = choose_spread_weight(*_shifted_logits(300, 1.5, seed), (0.25, 0.5, 1, 2), 0.003)
        scores = {p["spread_weight"]: p["select_cv"] for p in points}
        assert list(scores) == [0.0, 0.25, 0.5, 1.0, 2.0] and chosen > 0  # seen: 2, 2, 1
        assert scores[chosen]["worst_tpr"] > scores[0.0]["worst_tpr"] + 0.3  # class 3: ~0.21 -> ~0.64
        assert scores[chosen]["accuracy"] >= scores[0.0]["accuracy"] - 0.003
        chosen, points = choose_spread_weight(*_shifted_logits(8, 0.0, seed), (0.25, 0.5, 1, 2), 0.003)
        assert chosen == 0.0 and points[0]["select_cv"] == split_metrics(
            _shifted_logits(8, 0.0, seed)[0].argmax(1), _shifted_logits(8, 0.0, seed)[1], 10)
    one_each = torch.eye(10) * 3, torch.arange(10)  # one sample per class: no half can score a bias
    assert choose_spread_weight(*one_each, (0.5,), 0.003)[0] == 0.0
    assert [p["spread_weight"] for p in choose_spread_weight(*one_each, (0.5,), 0.003)[1]] == [0.0]
