import numpy as np
import pytest
import torch

from adaptive_lb import metrics as M
from adaptive_lb.errors import DataError
from adaptive_lb.metrics import Measurement

# Hand-made 3-class case: rows are true classes.
CM = np.array([[8, 2, 0],
               [1, 6, 3],
               [0, 0, 5]])
NAMES = ("a", "b", "c")


def test_confusion_matrix_counts():
    y_true = torch.tensor([0, 0, 1, 2, 2, 2])
    y_pred = torch.tensor([0, 1, 1, 2, 0, 2])
    cm = M.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_values_by_hand():
    assert M.per_class_tpr(CM) == pytest.approx([0.8, 0.6, 1.0])
    assert M.per_class_precision(CM) == pytest.approx([8 / 9, 6 / 8, 5 / 8])
    p, r = np.array([8 / 9, 6 / 8, 5 / 8]), np.array([0.8, 0.6, 1.0])
    assert M.per_class_f1(CM) == pytest.approx(2 * p * r / (p + r))
    assert M.support(CM).tolist() == [10, 10, 5]
    assert M.accuracy(CM) == pytest.approx(19 / 25)


def test_summary_by_hand():
    s = M.summarize(CM, NAMES, "test")
    tpr = np.array([0.8, 0.6, 1.0])
    assert s["balanced_accuracy"] == pytest.approx(0.8)
    assert s["tpr_var"] == pytest.approx(((tpr - 0.8) ** 2).mean())  # population variance: 0.08/3
    assert s["tpr_std"] == pytest.approx(np.sqrt(0.08 / 3))
    assert s["worst_tpr"] == pytest.approx(0.6) and s["worst_class"] == "b"
    assert s["tpr_gap"] == pytest.approx(0.4)
    assert "sensitivity" not in s


def test_two_class_sensitivity_specificity():
    cm = np.array([[90, 10], [30, 70]])  # class 1 positive: TP=70, FN=30, TN=90, FP=10
    sens, spec = M.sensitivity_specificity(cm)
    assert (sens, spec) == pytest.approx((0.7, 0.9))
    s = M.summarize(cm, ("neg", "pos"))
    assert s["sensitivity"] == pytest.approx(0.7) and s["specificity"] == pytest.approx(0.9)


def test_empty_class_is_an_error_not_zero():
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 4]])
    with pytest.raises(M.EmptyClassError, match="class.*b.*no samples in the held-out split"):
        M.summarize(cm, NAMES, "held-out")


def test_never_predicted_class_has_zero_precision():
    cm = np.array([[5, 0], [5, 0]])
    assert M.per_class_precision(cm).tolist() == [0.5, 0.0]
    assert M.per_class_f1(cm)[1] == 0.0


def test_accepts_torch_and_rejects_non_square():
    assert M.accuracy(torch.tensor(CM)) == pytest.approx(19 / 25)
    with pytest.raises(ValueError, match="square"):
        M.accuracy(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------ Measurement
def test_measurement_derives_tpr_confusion_and_soft_recall_from_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 3.0]])  # sample 2 ties: argmax -> class 0
    labels = torch.tensor([0, 0, 1, 1])
    m = Measurement(logits, labels)
    assert m.confusion.tolist() == [[1, 1], [1, 1]]
    assert m.tpr.tolist() == [0.5, 0.5] and m.counts.tolist() == [2.0, 2.0]
    p = torch.softmax(logits, dim=1)
    assert m.soft_recall.tolist() == pytest.approx([float(p[0, 0] + p[1, 0]) / 2, float(p[2, 1] + p[3, 1]) / 2])
    assert m.equalising_biases().shape == (2,)


def test_measurement_from_tpr_has_no_confusion_and_checks_values():
    m = Measurement.from_tpr(torch.tensor([0.25, 1.0]), torch.tensor([4.0, 4.0]))
    assert m.tpr.tolist() == [0.25, 1.0]
    with pytest.raises(DataError, match="needs logits and labels"):
        _ = m.confusion
    with pytest.raises(DataError, match="class.*2 have no samples in the held-out"):
        _ = Measurement(torch.zeros(3, 3), torch.tensor([0, 0, 1])).tpr
