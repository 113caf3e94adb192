"""The baselines' maths against hand-computed values: count weights, losses, DRW, samplers, post-hoc biases."""

import math

import pytest
import torch
import torch.nn.functional as F

from adaptive_lb.config import ControllerConfig, LossConfig
from adaptive_lb.controllers import create_controller
from adaptive_lb.data.build import Split
from adaptive_lb.data.loader import BatchLoader
from adaptive_lb.data.samplers import SAMPLERS, check_sampler, epoch_indices, epoch_size
from adaptive_lb.errors import ConfigError, DataError
from adaptive_lb.losses import create_loss, focal_loss, ldam_margins, weighted_cross_entropy
from adaptive_lb.metrics import EmptyClassError, Measurement, confusion_matrix, per_class_recall, per_class_tpr
from adaptive_lb.posthoc import ArgmaxState, equalising_biases, logit_adjust_biases
from adaptive_lb.weighting import COUNT_WEIGHTS, effective_number, inverse_freq, inverse_sqrt

LOSSES = LossConfig.__dataclass_fields__["name"].metadata["choices"]


# ------------------------------------------------------------------------------------------ count weights
def test_inverse_freq_is_n_over_c_nc_scaled_to_mean_one():
    # n / (C n_c) = [3.333, 1.111, 0.556] for counts [100, 300, 600]; mean 1.667 -> [2, 2/3, 1/3]
    assert inverse_freq(torch.tensor([100, 300, 600])).tolist() == pytest.approx([2.0, 2 / 3, 1 / 3])


def test_inverse_sqrt_hand_values():
    # 1/sqrt([1, 4, 16]) = [1, 0.5, 0.25], mean 7/12
    assert inverse_sqrt(torch.tensor([1, 4, 16])).tolist() == pytest.approx([12 / 7, 6 / 7, 3 / 7])


def test_effective_number_hand_values_and_limits():
    # E_n = (1 - 0.9^n) / 0.1: 9.999734 for n=100, 6.513216 for n=10; weights 1/E_n scaled to mean 1
    assert effective_number(torch.tensor([100, 10]), 0.9).tolist() == pytest.approx([0.788862, 1.211138], abs=1e-6)
    counts = torch.tensor([5000, 500, 50])
    assert effective_number(counts, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert effective_number(counts, 1 - 1e-9).tolist() == pytest.approx(inverse_freq(counts).tolist(), rel=1e-4)


@pytest.mark.parametrize("name", COUNT_WEIGHTS)
def test_count_weights_invariants(name):
    w = COUNT_WEIGHTS[name](torch.tensor([400, 100, 25, 5]), 0.99)
    assert float(w.mean()) == pytest.approx(1.0) and bool((w > 0).all())
    assert w.tolist() == sorted(w.tolist()), "rarer classes never get a smaller weight"
    with pytest.raises(DataError, match="every class in the training data"):
        COUNT_WEIGHTS[name](torch.tensor([10, 0]), 0.99)


# ------------------------------------------------------------------------------------------ losses
def test_focal_with_gamma_zero_is_cross_entropy_and_hand_value():
    g = torch.Generator().manual_seed(0)
    z, y, w = torch.randn(16, 5, generator=g), torch.randint(5, (16,), generator=g), torch.rand(5, generator=g) + 0.5
    assert torch.allclose(focal_loss(z, y, w, 0.0), weighted_cross_entropy(z, y, w))
    # p = [0.25, 0.75], target 1: CE = -log 0.75 = 0.287682; focal(gamma=2) = 0.25^2 * 0.287682 = 0.017980
    z1 = torch.tensor([[0.0, math.log(3.0)]])
    assert float(focal_loss(z1, torch.tensor([1]), torch.ones(2), 2.0)) == pytest.approx(0.0179801, abs=1e-6)


def test_ldam_margins_and_loss_hand_values():
    m = ldam_margins(torch.tensor([1000, 10]), 0.5)  # 0.5 * (10/1000)^(1/4) = 0.158114 for the frequent class
    assert m.tolist() == pytest.approx([0.158114, 0.5], abs=1e-6)
    loss = create_loss(LossConfig(name="ldam", max_m=0.5, scale=1.0), torch.tensor([1000, 10]))
    # logits [1, 2], target 0: CE([1 - 0.158114, 2], 0) = 1.431249
    value = float(loss(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), torch.ones(2)))
    assert value == pytest.approx(1.431249, abs=1e-5)


def test_logit_adjusted_and_balanced_softmax_hand_value():
    counts = torch.tensor([3, 1])  # prior [0.75, 0.25]
    z, y, w = torch.zeros(1, 2), torch.tensor([1]), torch.ones(2)
    # CE([log .75, log .25], 1) = log 4
    for cfg in (LossConfig(name="logit_adjusted", tau=1.0), LossConfig(name="balanced_softmax", tau=0.3)):
        assert float(create_loss(cfg, counts)(z, y, w)) == pytest.approx(math.log(4), abs=1e-6)
    assert float(create_loss(LossConfig(name="logit_adjusted", tau=0.0), counts)(z, y, w)) == pytest.approx(math.log(2))


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_weighted_per_sample_and_differentiable(name):
    g = torch.Generator().manual_seed(1)
    counts = torch.tensor([500, 50, 5])
    loss = create_loss(LossConfig(name=name, gamma=2.0), counts)
    z = torch.randn(12, 3, generator=g, requires_grad=True)
    y = torch.randint(3, (12,), generator=g)
    value = loss(z, y, torch.ones(3))
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 0 and torch.isfinite(z.grad).all()
    # a zero weight on a class removes exactly its samples' share of the mean
    w = torch.tensor([1.5, 1.5, 0.0])
    with torch.no_grad():
        parts = [loss(z[i:i + 1], y[i:i + 1], w).item() for i in range(12)]
        assert loss(z, y, w).item() == pytest.approx(sum(parts) / 12, rel=1e-5)


def test_reductions_hand_values():
    # zero logits over 2 classes: every CE is log 2; weights [3, 1], targets [0, 1]:
    # mean = (3 log 2 + log 2) / 2 = 2 log 2; weighted_mean = (3 log 2 + log 2) / (3 + 1) = log 2
    z, y, w = torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([3.0, 1.0])
    assert float(weighted_cross_entropy(z, y, w, "mean")) == pytest.approx(2 * math.log(2))
    assert float(weighted_cross_entropy(z, y, w, "weighted_mean")) == pytest.approx(math.log(2))


def test_weighted_mean_is_cross_entropy_with_weight():
    g = torch.Generator().manual_seed(3)
    z, y, w = torch.randn(32, 5, generator=g), torch.randint(5, (32,), generator=g), torch.rand(5, generator=g) + 0.1
    ce = create_loss(LossConfig(name="ce", reduction="weighted_mean"), torch.ones(5))
    assert float(ce(z, y, w)) == pytest.approx(float(F.cross_entropy(z, y, weight=w)), rel=1e-6)
    counts = torch.tensor([1000, 300, 100, 30, 10])  # LDAM as kaidic/LDAM-DRW: F.cross_entropy(s * z_m, y, weight=w)
    ldam = create_loss(LossConfig(name="ldam", max_m=0.5, scale=30.0, reduction="weighted_mean"), counts)
    z_m = z - F.one_hot(y, 5) * ldam_margins(counts, 0.5)
    assert float(ldam(z, y, w)) == pytest.approx(float(F.cross_entropy(30 * z_m, y, weight=w)), rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_takes_either_reduction(name):
    """weighted_mean = mean * B / sum_i w[y_i], and ignores a uniform scale of the weights; mean does not."""
    g = torch.Generator().manual_seed(2)
    counts = torch.tensor([500, 50, 5])
    z, y, w = torch.randn(12, 3, generator=g), torch.randint(3, (12,), generator=g), torch.tensor([0.2, 1.0, 1.8])
    mean, wmean = (create_loss(LossConfig(name=name, gamma=2.0, reduction=r), counts)
                   for r in ("mean", "weighted_mean"))
    assert float(wmean(z, y, w)) == pytest.approx(float(mean(z, y, w)) * 12 / float(w[y].sum()), rel=1e-5)
    assert float(wmean(z, y, 4 * w)) == pytest.approx(float(wmean(z, y, w)), rel=1e-5)
    assert float(mean(z, y, 4 * w)) == pytest.approx(4 * float(mean(z, y, w)), rel=1e-5)
    with pytest.raises(ConfigError, match="loss.reduction"):
        LossConfig(name=name, reduction="sum")


def test_scale_multiplies_the_training_logits():
    z, y, w = torch.tensor([[0.2, -0.1, 0.4]]), torch.tensor([0]), torch.ones(3)
    loss = create_loss(LossConfig(name="ce", scale=30.0), torch.tensor([1, 1, 1]))
    assert float(loss(z, y, w)) == pytest.approx(float(F.cross_entropy(30 * z, y)))


# ------------------------------------------------------------------------------------------ DRW
@pytest.mark.parametrize("drw_epoch, switch", [(3, 3), (0, 4)])  # 0 = round(0.8 * 5) = 4
def test_drw_switches_at_the_named_epoch(drw_epoch, switch):
    counts = torch.tensor([400, 40])
    ctl = create_controller(ControllerConfig(name="drw", count_weights="effective_number", beta=0.999,
                                             drw_epoch=drw_epoch), counts, 5)
    target = effective_number(counts, 0.999)
    applied = [ctl.initial().class_weights]  # weights trained with in epoch 0, 1, ...
    for e in range(4):
        measured = Measurement.from_tpr(torch.tensor([0.9, 0.5]), torch.tensor([10.0, 10.0]))
        applied.append(ctl.update(e, measured).class_weights)
    for e, w in enumerate(applied):
        assert torch.allclose(w, target.float() if e >= switch else torch.ones(2)), e


def test_static_count_weights_come_from_training_counts():
    counts = torch.tensor([100, 300, 600])
    ctl = create_controller(ControllerConfig(name="static", count_weights="inverse_freq"), counts, 5)
    assert ctl.initial().class_weights.tolist() == pytest.approx([2.0, 2 / 3, 1 / 3])


# ------------------------------------------------------------------------------------------ samplers
LT_LABELS = torch.cat([torch.full((n,), c) for c, n in enumerate((50, 20, 5))])


@pytest.mark.parametrize("kind, per_class", [("none", [50, 20, 5]), ("oversample", [50, 50, 50]),
                                             ("oversample_aug", [50, 50, 50]), ("undersample", [5, 5, 5])])
def test_samplers_give_the_intended_class_frequencies(kind, per_class):
    for seed in range(3):
        idx, copy = epoch_indices(LT_LABELS, 3, kind, torch.Generator().manual_seed(seed))
        assert len(idx) == epoch_size(LT_LABELS, 3, kind) == sum(per_class)
        assert torch.bincount(LT_LABELS[idx], minlength=3).tolist() == per_class
        originals = idx[~copy]
        assert len(set(originals.tolist())) == len(originals), "an original is visited once at most"
        if kind.startswith("oversample"):
            assert sorted(originals.tolist()) == list(range(len(LT_LABELS))), "every original once"
            assert torch.bincount(LT_LABELS[idx[copy]], minlength=3).tolist() == [0, 30, 45]
        else:
            assert not copy.any()


def test_undersampling_redraws_its_subset_every_epoch():
    seen = set()
    for seed in range(10):
        idx, _ = epoch_indices(LT_LABELS, 3, "undersample", torch.Generator().manual_seed(seed))
        seen |= set(idx.tolist())
    assert len(seen) > 40  # far more than the 15 of one epoch


def test_a_sampler_refuses_an_empty_class():
    with pytest.raises(DataError, match="class\\(es\\) c have no training image"):
        check_sampler(torch.tensor([0, 0, 1]), 3, "oversample", ["a", "b", "c"])
    check_sampler(torch.tensor([0, 0, 1]), 3, "none", ["a", "b", "c"])  # no re-sampling, no problem
    assert "none" in SAMPLERS


def test_oversample_aug_augments_the_copies_only():
    x = torch.arange(len(LT_LABELS), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    seen = []

    def augmenter(x01, m):
        seen.append(m.clone())
        return x01
    loader = BatchLoader(Split(x, LT_LABELS), torch.zeros(1), torch.ones(1), 16, augmenter=augmenter,
                         sampler="oversample_aug", num_classes=3, copy_aug=0.4)
    ys = torch.cat([yb for _, yb in loader.batches(torch.Generator().manual_seed(0), torch.zeros(3))])
    m = torch.cat(seen)
    assert len(loader) == math.ceil(150 / 16) and torch.bincount(ys).tolist() == [50, 50, 50]
    assert int((m == 0.4).sum()) == 75 and int((m == 0).sum()) == 75  # 75 copies at copy_aug, originals none


# ------------------------------------------------------------------------------------------ post-hoc
def test_equalising_biases_reduce_the_tpr_spread_of_a_constructed_case():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(200)
    logits = F.one_hot(labels, 3).float() * 2.0 + torch.randn(600, 3, generator=g)
    logits[:, 2] -= 1.5  # class 2 is under-predicted: its TPR is far below the others
    before = recall_of(logits, labels)
    bias = equalising_biases(logits, labels)
    after = recall_of(logits + bias, labels)
    assert float(before.std()) > 0.2 and float(after.std()) < 0.3 * float(before.std())
    assert float(bias.sum()) == pytest.approx(0.0, abs=1e-5) and int(bias.argmax()) == 2
    assert float(after.mean()) >= float(before.mean())  # evening out here also raises balanced accuracy


def recall_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return per_class_recall(logits.argmax(dim=1) == labels, labels, logits.shape[1])


def test_fit_scores_ties_as_argmax_breaks_them():
    """The fitter's fast per-candidate recall must equal argmax's own on tied logits (lowest index wins):
    integer-valued logits tie often, as bf16 ones do."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(4).repeat_interleave(50)
    logits = torch.randint(0, 3, (200, 4), generator=g).double()
    shifts = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    for c in range(4):
        fast = ArgmaxState(logits, labels).candidate_recall(c, shifts)  # (C, K)
        for k, s in enumerate(shifts):
            moved = logits.clone()
            moved[:, c] += s
            assert torch.equal(fast[:, k], recall_of(moved, labels)), (c, float(s))


def test_one_recall_reducer_agrees_with_the_confusion_matrix():
    g = torch.Generator().manual_seed(2)
    labels, pred = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (300,), generator=g)
    batched = per_class_recall(torch.stack([pred == labels, pred != labels], dim=1), labels, 5)  # (C, 2)
    assert batched[:, 0].numpy() == pytest.approx(per_class_tpr(confusion_matrix(labels, pred, 5)))
    assert (batched.sum(dim=1) == 1).all()
    with pytest.raises(EmptyClassError, match="class.*4 have no samples"):
        per_class_recall(labels[labels < 4] == 0, labels[labels < 4], 5)


def test_equalising_biases_keep_zero_when_already_even():
    labels = torch.arange(2).repeat_interleave(10)
    logits = F.one_hot(labels, 2).float()  # every sample right: TPR 1, 1
    assert equalising_biases(logits, labels).tolist() == [0.0, 0.0]


def test_logit_adjust_biases_are_minus_tau_log_prior():
    assert logit_adjust_biases(torch.tensor([3, 1]), 0.5).tolist() == pytest.approx(
        [-0.5 * math.log(0.75), -0.5 * math.log(0.25)])
