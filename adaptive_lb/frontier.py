"""Accuracy-vs-evenness frontiers: how methods are compared honestly (pure functions, no training).

Every method has a strength knob, and post-hoc calibration adds a second one (the spread weight of the
equalising biases). A method is judged by the set of (accuracy, worst-class TPR) points it can reach, not by
one hand-picked point:

- ``calibration_sweep``: for one trained model, biases fitted on ``select`` at several spread weights (0 = the
  raw model), scored on ``select`` and on the test split (predictions kept for the bootstrap);
- ``pareto_front``: the points no other point beats on both axes;
- ``worst_at_accuracy``: a frontier's worst-class TPR at a given accuracy (to compare methods at matched
  accuracy, not at points that sit elsewhere on the same curve);
- ``pick_on_select``: the operating point a user would choose without the test split: the best ``select``
  worst-class TPR among points whose ``select`` accuracy stays within a tolerance of a reference, both read
  cross-fitted (biases fitted on one half of ``select``, scored on the other);
- ``paired_bootstrap``: a confidence interval for the difference of two methods' test metric, resampling test
  images jointly (the same resample for both methods and every seed), so the pairing is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from adaptive_lb.metrics import per_class_recall
from adaptive_lb.posthoc import equalising_biases


def split_metrics(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, worst-class TPR and TPR std (population) of predictions ``(N,)`` against labels ``(N,)``."""
    tpr = per_class_recall(pred == labels, labels, num_classes)  # (C,)
    return {"accuracy": float((pred == labels).double().mean()), "worst_tpr": float(tpr.min()),
            "tpr_std": float(tpr.std(unbiased=False)), "balanced_accuracy": float(tpr.mean())}


def stratified_folds(labels: torch.Tensor, folds: int = 2, seed: int = 0) -> torch.Tensor:
    """Fold index ``(N,)`` of each sample: every class's samples shuffled (seeded) and dealt out in turn, so
    each fold holds every class in (almost) equal shares."""
    gen = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        idx = torch.nonzero(labels == c)[:, 0]
        fold[idx[torch.randperm(len(idx), generator=gen)]] = torch.arange(len(idx)) % folds
    return fold


def cross_fitted_predictions(logits: torch.Tensor, labels: torch.Tensor, sweeps: int, spread_weight: float,
                             folds: int = 2) -> torch.Tensor:
    """Predictions ``(N,)`` of ``argmax(logits + b)`` where each sample's biases were fitted on the other folds
    only: an honest score for a calibration that is fitted and judged on the same split."""
    fold = stratified_folds(labels, folds)
    pred = torch.empty(len(labels), dtype=torch.long)
    for k in range(folds):
        fit, held = fold != k, fold == k
        bias = equalising_biases(logits[fit], labels[fit], sweeps, spread_weight)
        pred[held] = (logits[held] + bias).argmax(dim=1)
    return pred


def calibration_sweep(select: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                      spread_weights: Sequence[float], sweeps: int = 8) -> list[dict]:
    """One point per spread weight: biases fitted on ``select`` (logits ``(N, C)``, labels ``(N,)``), metrics of
    ``argmax(logits + b)`` on select and test, and the test predictions ``(M,)``. Spread weight 0 = no bias.

    ``select`` scores the biases on the samples they were fitted on, which flatters them (seen on full
    Fashion-MNIST: select accuracy up, test accuracy down); ``select_cv`` scores each select sample with biases
    fitted on the other half of select (2-fold, stratified), which is what ``pick_on_select`` reads."""
    (zs, ys), (zt, yt) = select, test
    num = zs.shape[1]
    out = []
    for sw in spread_weights:
        bias = equalising_biases(zs, ys, sweeps, sw) if sw > 0 else torch.zeros(num)
        pred_s, pred_t = (zs + bias).argmax(dim=1), (zt + bias).argmax(dim=1)
        pred_cv = cross_fitted_predictions(zs, ys, sweeps, sw) if sw > 0 else pred_s
        out.append({"spread_weight": sw, "bias": bias.tolist(), "select": split_metrics(pred_s, ys, num),
                    "select_cv": split_metrics(pred_cv, ys, num), "test": split_metrics(pred_t, yt, num),
                    "test_pred": pred_t})
    return out


def choose_spread_weight(logits: torch.Tensor, labels: torch.Tensor, candidates: Sequence[float],
                         tolerance: float, sweeps: int = 8) -> tuple[float, list[dict]]:
    """The spread weight a run's calibration should use, chosen on its own select split ``(N, C)``, ``(N,)``.

    Each candidate (and 0, the raw model) is scored cross-fitted (``cross_fitted_predictions``); the choice is
    ``pick_on_select``'s: the best worst-class TPR among candidates whose accuracy is at least the raw model's
    minus ``tolerance``. Returns the chosen weight and every candidate's ``{"spread_weight", "select_cv"}``
    scores. The rule of bench/frontier.py's picks, applied to one model: where biases fitted on half of select
    do not help the other half (a small split, an already even model), it keeps the raw model (0), and so it
    does when some class has fewer than 2 samples (no half could score it: only the raw candidate is returned)."""
    num = logits.shape[1]
    too_few = int(torch.bincount(labels, minlength=num).min()) < 2
    weights = [0.0] if too_few else [0.0, *sorted({float(c) for c in candidates if c > 0})]
    points = [{"spread_weight": sw, "select_cv": split_metrics(
        cross_fitted_predictions(logits, labels, sweeps, sw) if sw > 0 else logits.argmax(dim=1), labels, num)}
        for sw in weights]
    floor = points[0]["select_cv"]["accuracy"] - tolerance
    return weights[pick_on_select(points, floor)], points


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated on (x, y), both maximised, sorted by x; ties keep the first."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def worst_at_accuracy(front: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """The worst-class TPR of a frontier ``[(accuracy, worst_tpr)]`` (``pareto_front``'s order: accuracy rising)
    at ``accuracy``, linear between neighbouring points: a random mix of the two models reaches that accuracy
    and at least that worst-class TPR. None outside the frontier's accuracy range (no point to match)."""
    if not front or not front[0][0] <= accuracy <= front[-1][0]:
        return None
    for (a0, w0), (a1, w1) in pairwise(front):
        if a0 <= accuracy <= a1:
            return w0 if a1 == a0 else w0 + (w1 - w0) * (accuracy - a0) / (a1 - a0)
    return front[0][1]  # a one-point frontier, matched exactly


def pick_on_select(points: Sequence[dict], min_accuracy: float, split: str = "select_cv") -> int:
    """Index of the point with the best worst-class TPR on ``split`` among those with accuracy >=
    ``min_accuracy`` there (the most accurate point when none qualifies). Never looks at the test split.
    ``select_cv`` (default): the cross-fitted select scores of ``calibration_sweep``; ``select``: in-sample."""
    ok = [i for i, p in enumerate(points) if p[split]["accuracy"] >= min_accuracy]
    if not ok:
        return max(range(len(points)), key=lambda i: points[i][split]["accuracy"])
    return max(ok, key=lambda i: (points[i][split]["worst_tpr"], points[i][split]["accuracy"]))


def paired_bootstrap(preds_a: Sequence[torch.Tensor], preds_b: Sequence[torch.Tensor], labels: torch.Tensor,
                     metric: str = "worst_tpr", draws: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean over seeds of ``metric(a) - metric(b)`` on the test split, with a percentile interval.

    ``preds_a[s]``, ``preds_b[s]``: test predictions ``(N,)`` of seed s for methods a and b (paired seeds); each
    draw resamples the N test images with replacement, stratified by class, once for all seeds and both methods.
    """
    num = int(labels.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(labels == c)[:, 0] for c in range(num)]

    def stat(idx: torch.Tensor) -> float:
        y = labels[idx]
        diff = [split_metrics(a[idx], y, num)[metric] - split_metrics(b[idx], y, num)[metric]
                for a, b in zip(preds_a, preds_b, strict=True)]
        return sum(diff) / len(diff)

    point = stat(torch.arange(len(labels)))
    values = sorted(stat(_stratified_resample(groups, gen)) for _ in range(draws))
    lo, hi = values[int((1 - level) / 2 * draws)], values[min(draws - 1, int((1 + level) / 2 * draws))]
    return {"metric": metric, "difference": point, "low": lo, "high": hi, "draws": draws, "level": level}


def _stratified_resample(groups: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
    """Indices drawn with replacement within each class (class sizes kept, so per-class TPR stays defined)."""
    return torch.cat([g[torch.randint(len(g), (len(g),), generator=gen)] for g in groups])

