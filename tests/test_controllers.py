import dataclasses
from pathlib import Path

import pytest
import torch

from adaptive_lb.config import ControllerConfig, load_config
from adaptive_lb.controllers import CONTROLLERS, ControlAction, create_controller
from adaptive_lb.errors import ConfigError, DataError
from adaptive_lb.metrics import Measurement
from adaptive_lb.weighting import power_ratio

C, EPOCHS = 4, 5
# every actuator on, so the invariants below cover all of them
ALL_ON = dict(aug_gain=1.0, margin_gain=0.5, integral_gain=0.2, warmup_epochs=0)
COUNTS = torch.full((C,), 50.0)
TRAIN_COUNTS = torch.tensor([400, 100, 25, 5])  # long-tailed, so count weights are not all ones
NEEDS = {"drw": dict(count_weights="effective_number", beta=0.99, drw_epoch=2)}  # what a valid config sets


def make(name, **kw):
    return create_controller(ControllerConfig(name=name, **{**ALL_ON, **NEEDS.get(name, {}), **kw}),
                             TRAIN_COUNTS, EPOCHS)


def tpr_stream(seed, n=12):
    """TPR sequences with extremes (0 and 1) mixed in."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.rand(C, generator=g) for _ in range(n)]
    out[3] = torch.tensor([0.0, 1.0, 0.5, 0.5])
    out[4] = torch.ones(C)
    out[5] = torch.zeros(C)
    return out


def check_action(a: ControlAction):
    w, aug, m, pair, mix = a
    assert w.shape == aug.shape == m.shape == (C,) and pair.shape == mix.shape == (C, C)
    assert (mix >= 0).all() and not mix.diagonal().any() and (mix.sum(dim=1) <= 1 + 1e-6).all()
    assert torch.equal(pair, pair.t()) and not pair.diagonal().any() and (pair >= 0).all()
    assert torch.isfinite(w).all() and (w > 0).all() and abs(w.mean().item() - 1) < 1e-5
    assert ((aug >= 0) & (aug <= 1)).all()
    assert torch.isfinite(m).all()


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_every_controller_keeps_its_action_valid(name, seed):
    ctl = make(name)
    check_action(ctl.initial())
    for epoch, tpr in enumerate(tpr_stream(seed)):
        check_action(ctl.update(epoch, Measurement.from_tpr(tpr, COUNTS)))


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_every_controller_resumes_exactly_from_its_state_dict(name):
    stream = tpr_stream(7)
    full = make(name)
    for epoch, tpr in enumerate(stream):
        last = full.update(epoch, Measurement.from_tpr(tpr, COUNTS))
    part = make(name)
    for epoch, tpr in enumerate(stream[:6]):
        part.update(epoch, Measurement.from_tpr(tpr, COUNTS))
    resumed = make(name)
    resumed.load_state_dict(part.state_dict())
    for epoch, tpr in enumerate(stream[6:], start=6):
        again = resumed.update(epoch, Measurement.from_tpr(tpr, COUNTS))
    for x, y in zip(last, again, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@pytest.mark.parametrize("tpr, counts, fragment", [
    (torch.tensor([0.5, float("nan"), 0.5, 0.5]), COUNTS, "not in [0, 1]"),
    (torch.tensor([0.5, 1.5, 0.5, 0.5]), COUNTS, "not in [0, 1]"),
    (torch.full((C,), 0.5), torch.tensor([50.0, 0.0, 50.0, 50.0]), "no held-out images"),
    (torch.full((C + 1,), 0.5), torch.full((C + 1,), 50.0), "measurement of 5 classes; expected 4"),
    (torch.full((C + 1,), 0.5), COUNTS, "TPR of shape (5,) and counts of shape (4,) disagree"),
])
def test_bad_measurements_are_refused_not_turned_into_nan(name, tpr, counts, fragment):
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make(name).update(0, Measurement.from_tpr(tpr, counts))


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="controller.name: 'pid' is not one of"):
        dataclasses.replace(ControllerConfig(), name="pid")  # the config refuses it when built
    for key, value, fragment in (("name", "pid", "unknown controller 'pid'"),
                                 ("weight_fn", "softmax", "unknown weight function 'softmax'")):
        cfg = ControllerConfig()
        object.__setattr__(cfg, key, value)  # past the config's own check: the registry refuses it too
        with pytest.raises(ConfigError, match=fragment):
            create_controller(cfg, TRAIN_COUNTS, EPOCHS)


HARD_LAST = torch.tensor([0.9, 0.9, 0.8, 0.6])  # class 3 is hard, classes 0-1 easy


def test_damped_with_alpha_one_jumps_to_the_bounded_target():
    ctl = make("damped", damping=1.0, integral_gain=0.0, w_min=0.01, w_max=100.0)
    w = ctl.update(0, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights
    target = power_ratio(HARD_LAST.double(), 1.0)
    assert torch.allclose(w.double(), target / target.mean(), atol=1e-6)


def test_damped_moves_part_of_the_way_in_log_space():
    ctl = make("damped", damping=0.25, integral_gain=0.0, w_min=0.01, w_max=100.0)
    w = ctl.update(0, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights.double()
    target = power_ratio(HARD_LAST.double(), 1.0)
    expected = (0.25 * target.log()).exp()
    assert torch.allclose(w, expected / expected.mean(), atol=1e-6)
    assert w[3] > 1 and w[3] < (target / target.mean())[3]


def test_damped_respects_bounds_and_warmup():
    ctl = make("damped", damping=1.0, w_min=0.5, w_max=1.5, warmup_epochs=2, exponent=8.0)
    for epoch in range(2):  # the first two measurements are only watched
        assert torch.equal(ctl.update(epoch, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights, torch.ones(C))
    w = ctl.update(2, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights
    assert w.max() <= 1.5 + 1e-6 and w.min() >= 0.5 - 1e-6 and w[3] == w.max()


def test_integral_term_keeps_pushing_a_persistent_gap():
    ctl = make("damped", damping=0.5, integral_gain=0.3, aug_gain=0.0, margin_gain=0.0)
    weights = [ctl.update(e, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights[3].item() for e in range(4)]
    no_i = make("damped", damping=0.5, integral_gain=0.0)
    plain = [no_i.update(e, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights[3].item() for e in range(4)]
    assert weights == sorted(weights) and weights[-1] > plain[-1] + 0.1


@pytest.mark.parametrize("gain", [1.0, -1.0])
def test_augmentation_follows_the_gap_with_the_configured_sign(gain):
    ctl = make("damped", aug_gain=gain, aug_init=0.5, gap_scale=0.1, damping=0.5)
    aug = ctl.update(0, Measurement.from_tpr(HARD_LAST, COUNTS)).aug_intensity
    gap = (HARD_LAST.mean() - HARD_LAST) / 0.1
    assert torch.allclose(aug, (0.5 + 0.5 * gain * gap).clamp(0, 1), atol=1e-6)
    assert (aug[3] > aug[0]) == (gain > 0)


def test_margins_handicap_hard_classes_and_stay_bounded():
    ctl = make("damped", margin_gain=1.0, margin_max=0.7)
    for epoch in range(10):
        m = ctl.update(epoch, Measurement.from_tpr(HARD_LAST, COUNTS)).logit_margin
    assert m[3] == m.min() and m[3] < 0 and m.abs().max() <= 0.7 + 1e-6


def test_two_pass_waits_for_the_end_of_the_first_pass():
    ctl = make("two_pass", damping=1.0)
    for epoch in range(EPOCHS - 1):
        assert torch.equal(ctl.update(epoch, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights, torch.ones(C))
    w = ctl.update(EPOCHS - 1, Measurement.from_tpr(HARD_LAST, COUNTS)).class_weights
    target = power_ratio(HARD_LAST.double(), 1.0)
    assert torch.allclose(w.double(), target / target.mean(), atol=1e-6)
    later = ctl.update(EPOCHS, Measurement.from_tpr(torch.full((C,), 0.9), COUNTS))  # the second pass keeps them fixed
    assert torch.equal(later.class_weights, w) and ctl.passes == 2


def test_cdb_is_undamped_and_weights_only():
    ctl = make("cdb", exponent=1.0, damping=0.1, w_min=0.01, w_max=100.0)
    a = ctl.update(0, Measurement.from_tpr(HARD_LAST, COUNTS))
    target = 1 - HARD_LAST.double()
    assert torch.allclose(a.class_weights.double(), target / target.mean(), atol=1e-6)
    assert not a.aug_intensity.any() and not a.logit_margin.any()


# ---------------------------------------------------------------------------------- targets at the shipped bounds
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_config(ROOT / "configs/fashion_mnist_cdb.yaml").controller  # w_min 0.2, w_max 5, as every shipped config
UNDAMPED_CDB = {"cdb": {}, "damped": dict(weight_fn="cdb", damping=1.0, integral_gain=0.0),
                "two_pass": dict(weight_fn="cdb")}  # two_pass acts on the last epoch of its first pass


def first_weights(name: str, tpr: torch.Tensor, **kw) -> torch.Tensor:
    """The weights a controller with the shipped bounds sets from its first (decisive) measurement."""
    cfg = dataclasses.replace(SHIPPED, name=name, warmup_epochs=0, aug_gain=0.0, margin_gain=0.0, **kw)
    ctl = create_controller(cfg, TRAIN_COUNTS, EPOCHS)
    epoch = EPOCHS - 1 if name == "two_pass" else 0
    return ctl.update(epoch, Measurement.from_tpr(tpr, COUNTS)).class_weights.double()


@pytest.mark.parametrize("name", sorted(UNDAMPED_CDB))
def test_cdb_weights_are_normalised_before_the_bounds(name):
    """Issue 15: (1 - tpr) = [0.05, 0.1, 0.15, 0.5], mean 0.2 -> [0.25, 0.5, 0.75, 2.5], inside [0.2, 5]. Clamping
    the raw values to [0.2, 5] first flattened the three easy classes to one weight: [0.73, 0.73, 0.73, 1.82]."""
    assert (SHIPPED.w_min, SHIPPED.w_max) == (0.2, 5.0)
    w = first_weights(name, torch.tensor([0.95, 0.90, 0.85, 0.50]), exponent=1.0, **UNDAMPED_CDB[name])
    assert w.tolist() == pytest.approx([0.25, 0.50, 0.75, 2.50], abs=1e-6)


def test_damped_power_ratio_hand_values_at_the_shipped_bounds():
    # TPR [0.9, 0.9, 0.8, 0.6], mean 0.8: (0.8/tpr)^2 = [64/81, 64/81, 1, 16/9], mean 1.089506 ->
    # target [0.725212, 0.725212, 0.917847, 1.631728]; damping 0.5 from w = 1 takes its square root,
    # [0.851594, 0.851594, 0.958043, 1.277391], mean 0.984656 -> [0.864865, 0.864865, 0.972973, 1.297297]
    w = first_weights("damped", HARD_LAST, weight_fn="power_ratio", exponent=2.0, damping=0.5, integral_gain=0.0)
    assert w.tolist() == pytest.approx([0.864865, 0.864865, 0.972973, 1.297297], abs=1e-5)


@pytest.mark.parametrize("name", sorted(UNDAMPED_CDB))
def test_bounds_that_bite_keep_the_order_and_mean_one(name):
    # 1 - tpr = [0.05, 0.1, 0.4, 0.99], mean 0.385: class 0 falls below w_min = 0.2 and is held there; the rest
    # share the remaining 3.8 in proportion: c = 3.8 / 1.49 -> [0.2, 0.255034, 1.020134, 2.524832]
    # (clamping the raw values first gave classes 0 and 1 the same weight)
    w = first_weights(name, torch.tensor([0.95, 0.90, 0.60, 0.01]), exponent=1.0, **UNDAMPED_CDB[name])
    assert w.tolist() == pytest.approx([0.2, 0.255034, 1.020134, 2.524832], abs=1e-5)
    assert w.tolist() == sorted(w.tolist()) and len(set(w.tolist())) == C
    assert float(w.mean()) == pytest.approx(1.0) and w.min() >= SHIPPED.w_min - 1e-9 and w.max() <= SHIPPED.w_max
