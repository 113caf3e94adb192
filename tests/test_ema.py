import pytest
import torch
from torch import nn

from adaptive_lb.config import TrainConfig
from adaptive_lb.ema import ModelEma, ema_decay_at
from adaptive_lb.errors import ConfigError, ConfigWarning


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def fill(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in [*model.parameters(), model[1].running_mean, model[1].running_var]:
            t.fill_(value)


def test_decay_warm_up_by_hand():
    assert ema_decay_at(0, 0.995) == pytest.approx(1 / 10)
    assert ema_decay_at(8, 0.995) == pytest.approx(9 / 18)
    assert ema_decay_at(90, 0.995) == pytest.approx(91 / 100)
    assert ema_decay_at(1790, 0.995) == pytest.approx(0.995)  # (1+t)/(10+t) = 0.995 at t = 1790
    assert ema_decay_at(10**6, 0.995) == 0.995
    assert ema_decay_at(0, 0.995, warmup=False) == 0.995
    assert ema_decay_at(5, 0.0) == 0.0  # decay 0: the EMA is the live model


def test_ema_of_constant_weights_is_those_weights():
    model = net()
    ema = ModelEma(model, 0.9)
    for _ in range(20):
        ema.update(model)
    for e, v in zip(ema.module.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(e, v)
    assert ema.updates == 20 and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.parametrize("warmup, decay", [(True, 0.1), (False, 0.9)])  # step 0 with warm-up: (1+0)/(10+0)
def test_one_update_moves_weights_and_bn_statistics_by_one_minus_decay(warmup, decay):
    model = net()
    fill(model, 1.0)
    ema = ModelEma(model, 0.9, warmup)  # its copy holds 1.0 everywhere
    fill(model, 3.0)
    with torch.no_grad():
        model[1].num_batches_tracked.fill_(7)
    assert ema.update(model) == pytest.approx(decay)
    want = decay * 1.0 + (1 - decay) * 3.0  # between old and new, (1 - decay) of the way
    bn = ema.module[1]
    for t in [*ema.module.parameters(), bn.running_mean, bn.running_var]:  # BN statistics averaged, not copied
        assert torch.allclose(t, torch.full_like(t, want))
    assert int(bn.num_batches_tracked) == 7  # integer buffers are copied


def test_state_dict_round_trip_continues_identically():
    model, other = net(), net()
    a = ModelEma(model, 0.99)
    for step in range(3):
        fill(model, float(step))
        a.update(model)
    b = ModelEma(other, 0.99)
    b.load_state_dict(a.state_dict())
    assert b.updates == 3
    fill(model, 5.0)
    a.update(model)
    b.update(model)
    for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_a_model_with_other_tensors_is_refused():
    ema = ModelEma(net(), 0.9)
    with pytest.raises(ValueError, match="state keys differ"):
        ema.update(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ModelEma(net(), 1.0)


def test_config_range_and_a_warmup_flag_that_does_nothing():
    assert TrainConfig(ema_decay=0.995).ema_decay == 0.995
    with pytest.raises(ConfigError, match="train.ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.warns(ConfigWarning, match="ema_warmup"):
        TrainConfig(ema_warmup=False)
