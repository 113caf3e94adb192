import math

import pytest
import torch
import torch.nn.functional as F

from adaptive_lb.config import ControllerConfig, OptimConfig
from adaptive_lb.controllers import StaticController, create_controller
from adaptive_lb.errors import ConfigError
from adaptive_lb.losses import distillation_loss, weighted_cross_entropy
from adaptive_lb.metrics import Measurement
from adaptive_lb.optim import create_optimizer, create_scheduler, lr_factor

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
TARGETS = torch.tensor([0, 1, 2, 2])


def test_unit_weights_equal_plain_cross_entropy():
    assert weighted_cross_entropy(LOGITS, TARGETS, torch.ones(3)) == pytest.approx(F.cross_entropy(LOGITS, TARGETS))


def test_weights_multiply_per_sample_loss_and_mean_by_batch_size():
    w = torch.tensor([0.5, 1.0, 1.5])
    ce = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    expected = (0.5 * ce[0] + 1.0 * ce[1] + 1.5 * ce[2] + 1.5 * ce[3]) / 4
    assert weighted_cross_entropy(LOGITS, TARGETS, w) == pytest.approx(expected)
    # unlike F.cross_entropy(weight=w), scaling all weights scales the loss
    assert weighted_cross_entropy(LOGITS, TARGETS, 2 * w) == pytest.approx(2 * expected)


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(70, 100, 10, "constant") == 1.0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_schedules_step_per_batch_and_resume(name, schedule):
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(name=name, schedule=schedule, lr=0.1, warmup_epochs=1.0)
    opt = create_optimizer(cfg, model)
    sched = create_scheduler(cfg, opt, epochs=3, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(math.isfinite(v) and v >= 0 for v in lrs)
    assert max(lrs) <= 0.1 + 1e-9
    # resume half-way: a fresh optimiser + schedule loaded from step 6 must give the same lrs as going on
    model2 = torch.nn.Linear(2, 2)
    opt1, opt2 = create_optimizer(cfg, model), create_optimizer(cfg, model2)
    sched1 = create_scheduler(cfg, opt1, epochs=3, steps_per_epoch=4)
    for _ in range(6):
        opt1.step()
        sched1.step()
    sched2 = create_scheduler(cfg, opt2, epochs=3, steps_per_epoch=4)
    opt2.load_state_dict(opt1.state_dict())
    sched2.load_state_dict(sched1.state_dict())
    going_on, resumed = [], []
    for opt, sched, out in ((opt1, sched1, going_on), (opt2, sched2, resumed)):
        for _ in range(6):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert resumed == going_on == lrs[5:11]


def test_static_controller_normalises_to_mean_one():
    ctl = create_controller(ControllerConfig(weights=(1.0, 3.0)), torch.tensor([7, 7]), epochs=5)
    assert ctl.initial().class_weights.tolist() == [0.5, 1.5]
    action = ctl.update(0, Measurement.from_tpr(torch.tensor([0.9, 0.1]), torch.tensor([10.0, 10.0])))
    assert action.class_weights.tolist() == [0.5, 1.5] and action.aug_intensity.tolist() == [0.0, 0.0]
    assert StaticController(3).initial().class_weights.tolist() == [1.0, 1.0, 1.0]


def test_static_controller_wrong_length():
    with pytest.raises(ConfigError, match="has 2 entries but the data has 3 classes"):
        create_controller(ControllerConfig(weights=(1.0, 2.0)), torch.tensor([5, 5, 5]), epochs=5)


def test_distillation_loss_by_hand_and_against_torch_kl_div():
    # T = 1: teacher [log 3, 0] -> p = [0.75, 0.25]; student [0, 0] -> q = [0.5, 0.5];
    # KL(p || q) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812
    student, teacher = torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]])
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(0.130812, abs=1e-6)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    ref = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(t / 2, 1), log_target=True, reduction="none").sum(1) * 4
    assert torch.allclose(distillation_loss(s, t, 2.0), ref, atol=1e-6)
    assert torch.allclose(distillation_loss(t, t, 3.0), torch.zeros(5), atol=1e-6)  # the teacher itself: 0


def test_distillation_loss_pulls_the_student_only():
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    distillation_loss(s, t, 2.0).sum().backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    with torch.no_grad():  # one step down the gradient brings the student's soft labels closer to the teacher's
        moved = s - 0.5 * s.grad
    assert distillation_loss(moved, t, 2.0).sum() < distillation_loss(s, t, 2.0).sum()
