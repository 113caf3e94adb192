"""Per-class metrics as pure functions of a confusion matrix.

Convention: ``cm[i, j]`` counts samples of true class i predicted as class j, shape ``(C, C)``.
A class with no sample in the split has no TPR: that is an error (``EmptyClassError``), never a silent 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from adaptive_lb.errors import DataError


class EmptyClassError(DataError):
    """A class has no samples in the evaluated split, so its TPR is undefined."""


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, computed on the tensors' device (no host sync)."""
    flat = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _as_cm(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {arr.shape}")
    return arr.astype(np.float64)


def support(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """Samples per true class, ``(C,)``."""
    return _as_cm(cm).sum(axis=1)


def per_class_tpr(cm: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None,
                  split: str = "split") -> np.ndarray:
    """Recall of each class from a confusion matrix, ``(C,)``; ``EmptyClassError`` if a class has no samples."""
    m = _as_cm(cm)
    sup = m.sum(axis=1)
    _check_support(sup, class_names, split)
    return np.diag(m) / sup


def per_class_recall(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class from per-sample hits, batched over candidates: the package's one recall reducer
    for predictions that are not a single confusion matrix (the post-hoc fit scores K bias settings at once).

    ``hits`` ``(N,)`` or ``(N, K)`` bool (prediction == label), ``labels`` ``(N,)`` int64 -> float64 recall
    ``(C,)`` or ``(C, K)``. Equals ``per_class_tpr(confusion_matrix(labels, pred, C))`` for one candidate.
    """
    support = torch.bincount(labels, minlength=num_classes).double()  # (C,)
    _check_support(support.numpy(force=True), None, "fitting")
    h = hits.double().reshape(len(labels), -1)                         # (N, K)
    per_class = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device).index_add_(0, labels, h)
    recall = per_class / support[:, None]
    return recall if hits.dim() == 2 else recall[:, 0]


def _check_support(support: np.ndarray, class_names: Sequence[str] | None, split: str) -> None:
    empty = np.flatnonzero(support == 0)
    if empty.size:
        names = [class_names[i] if class_names else str(i) for i in empty]
        raise EmptyClassError(f"class(es) {', '.join(names)} have no samples in the {split} split, so their "
                              "TPR is undefined: raise data.heldout_fraction or data.subset_per_class")


def per_class_precision(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """Precision of each class, ``(C,)``; a class never predicted gets 0 (no correct predictions)."""
    m = _as_cm(cm)
    predicted = m.sum(axis=0)
    return np.divide(np.diag(m), predicted, out=np.zeros(len(m)), where=predicted > 0)


def per_class_f1(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """Harmonic mean of precision and TPR per class, ``(C,)``; 0 where both are 0."""
    p, r = per_class_precision(cm), per_class_tpr(cm)
    return np.divide(2 * p * r, p + r, out=np.zeros(len(p)), where=(p + r) > 0)


def accuracy(cm: np.ndarray | torch.Tensor) -> float:
    """Share of all samples classified correctly."""
    m = _as_cm(cm)
    return float(np.trace(m) / m.sum())


def sensitivity_specificity(cm: np.ndarray | torch.Tensor, positive: int = 1) -> tuple[float, float]:
    """For two classes: (TPR of ``positive``, TPR of the other class)."""
    tpr = per_class_tpr(cm)
    if len(tpr) != 2:
        raise ValueError(f"sensitivity/specificity need 2 classes, got {len(tpr)}")
    return float(tpr[positive]), float(tpr[1 - positive])


def summarize(cm: np.ndarray | torch.Tensor, class_names: Sequence[str], split: str = "split") -> dict:
    """All headline numbers of one split, JSON-ready.

    ``tpr_var`` and ``tpr_std`` are the population variance / std over classes (ddof=0): the spread the
    controller is asked to shrink. ``balanced_accuracy`` is the mean per-class TPR.
    """
    tpr = per_class_tpr(cm, class_names, split)
    worst = int(np.argmin(tpr))
    out = {
        "accuracy": accuracy(cm),
        "balanced_accuracy": float(tpr.mean()),
        "tpr": tpr.tolist(),
        "tpr_var": float(tpr.var()),
        "tpr_std": float(tpr.std()),
        "worst_tpr": float(tpr[worst]),
        "worst_class": class_names[worst],
        "tpr_gap": float(tpr.max() - tpr.min()),
        "precision": per_class_precision(cm).tolist(),
        "f1": per_class_f1(cm).tolist(),
        "support": support(cm).astype(int).tolist(),
    }
    if len(tpr) == 2:
        out["sensitivity"], out["specificity"] = sensitivity_specificity(cm)
    return out


TOP_K = 10  # classes shown at each end of a per-class table or plot once there are more than 2 * TOP_K (--top-k)


def extreme_classes(values: Sequence[float], k: int) -> list[int] | None:
    """What a per-class table or plot shows when classes are many: the ``k`` classes with the lowest ``values``
    ``(C,)`` then the ``k`` highest, in ascending order of value (ties: the lower class index is picked first);
    ``None`` (show every class, in class order) when ``k`` is 0 or ``C <= 2k``."""
    if k <= 0 or len(values) <= 2 * k:
        return None
    lowest = sorted(range(len(values)), key=lambda c: (values[c], c))[:k]
    rest = sorted(set(range(len(values))) - set(lowest), key=lambda c: (-values[c], c))[:k]
    return lowest + rest[::-1]


def spread_line(values: Sequence[float], what: str, k: int) -> str:
    """One line on all C classes for a table or plot that shows only the ``k`` lowest and highest of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    return (f"{len(v)} classes, {what}: mean {v.mean():.3f}, median {np.median(v):.3f}, std {v.std():.3f}, "
            f"min {v.min():.3f}, max {v.max():.3f}; the {k} lowest and {k} highest shown")


class Measurement:
    """What a controller reads after each epoch: the control split's logits and labels, and what derives from them.

    ``Measurement(logits (N, C), labels (N,))`` is the trainer's form; per-class TPR, counts, the confusion
    matrix, soft recall and the equalising biases are computed from it on first use. ``Measurement.from_tpr``
    carries per-class TPR and counts only (no logits), for callers that measure recall themselves; reading
    ``confusion`` or ``soft_recall`` from it is an error. Validation is the same for both: every class
    measured, TPR finite and in [0, 1] -- a bad measurement is a ``DataError``, never a NaN action.
    """

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> None:
        if logits.dim() != 2 or labels.shape != (len(logits),):
            raise DataError(f"a measurement needs logits (N, C) and labels (N,); got {tuple(logits.shape)} and "
                            f"{tuple(labels.shape)}")
        self.logits, self.labels = logits.float(), labels.long()
        self.num_classes = num_classes or logits.shape[1]
        self._tpr: torch.Tensor | None = None
        self._counts = torch.bincount(labels.cpu(), minlength=self.num_classes).double()  # (C,)

    @classmethod
    def from_tpr(cls, tpr: torch.Tensor, counts: torch.Tensor) -> Measurement:
        """Per-class TPR ``(C,)`` and the per-class sample counts ``(C,)`` they were measured on."""
        m = cls.__new__(cls)
        m.logits = m.labels = None
        m.num_classes = len(tpr)
        if counts.shape != tpr.shape:
            raise DataError(f"TPR of shape {tuple(tpr.shape)} and counts of shape {tuple(counts.shape)} disagree")
        m._counts, m._tpr = counts.double().cpu(), tpr.double().cpu()
        m._check()
        return m

    @property
    def counts(self) -> torch.Tensor:
        """Samples per class, ``(C,)`` float64."""
        return self._counts

    @property
    def tpr(self) -> torch.Tensor:
        """Recall per class, ``(C,)`` float64 (argmax; ties to the lowest class index, as ``torch.argmax``)."""
        if self._tpr is None:
            self._tpr = torch.from_numpy(per_class_tpr(self.confusion, None, "held-out (control)"))
            self._check()
        return self._tpr

    @functools.cached_property
    def confusion(self) -> torch.Tensor:
        """``(C, C)`` int64 counts, ``cm[true][predicted]``, on the CPU."""
        return confusion_matrix(self.labels, self._need_logits("confusion").argmax(dim=1), self.num_classes).cpu()

    @functools.cached_property
    def soft_recall(self) -> torch.Tensor:
        """Mean softmax probability of the true class, per class ``(C,)`` float64: a smooth TPR."""
        p_true = self._need_logits("soft_recall").softmax(dim=1).gather(1, self.labels[:, None])[:, 0]  # (N,)
        sums = torch.zeros(self.num_classes, dtype=torch.float64, device=p_true.device)
        return (sums.index_add_(0, self.labels, p_true.double()).cpu() / self._counts)

    def equalising_biases(self, sweeps: int = 8, spread_weight: float = 1.0) -> torch.Tensor:
        """Per-class logit biases ``(C,)`` that even out this split's TPR (``posthoc.equalising_biases``)."""
        from adaptive_lb.posthoc import equalising_biases

        return equalising_biases(self._need_logits("equalising_biases").cpu(), self.labels.cpu(), sweeps,
                                 spread_weight)

    def _need_logits(self, what: str) -> torch.Tensor:
        if self.logits is None:
            raise DataError(f"Measurement.{what} needs logits and labels; this one holds per-class TPR only")
        return self.logits

    def _check(self) -> None:
        empty = [c for c in range(self.num_classes) if not self._counts[c] > 0]
        if empty:
            raise DataError(f"class(es) {empty} have no held-out images, so their TPR cannot be measured: "
                            "raise data.heldout_fraction or data.subset_per_class")
        bad = [c for c in range(self.num_classes) if not 0.0 <= float(self._tpr[c]) <= 1.0]  # catches NaN too
        if bad:
            raise DataError(f"held-out TPR of class(es) {bad} is {[float(self._tpr[c]) for c in bad]}, not in [0, 1]")
