"""RecallBalancer, the public API: the same actions as the CLI trainer, direction, exact resume, argument checks,
calibration, shared intensities, and torch.distributed gathering (gloo, two processes)."""

import io

import pytest
import torch
import torch.nn.functional as F

from adaptive_lb import RecallBalancer
from adaptive_lb.callbacks import Callback
from adaptive_lb.controllers import ControlAction
from adaptive_lb.data import build_data
from adaptive_lb.metrics import per_class_recall
from adaptive_lb.trainer import Trainer

C = 4
# every actuator of the damped controller on, so state and actions are non-trivial everywhere
ALL_ON = dict(warmup_epochs=0, aug_gain=2.0, margin_gain=0.5, integral_gain=0.1, pair_gain=2.0, bias_gain=0.2)


def toy_logits(n=400, hard=2, seed=0, shift=2.5):
    """Logits ``(n, C)`` and labels ``(n,)`` of a fair classifier, except that class ``hard`` is often missed."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    z = torch.randn(n, C, generator=g) + 2.0 * F.one_hot(y, C)
    z[y == hard, hard] -= shift
    return z, y


def actions_equal(a: ControlAction, b: ControlAction) -> bool:
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b, strict=True))


class Record(Callback):
    """What the trainer's balancer saw (the control split's logits and labels) and did, every epoch."""

    def __init__(self):
        self.seen, self.actions = [], []

    def on_fit_start(self, trainer):
        self.actions.append(trainer.balancer.action)

    def on_epoch_end(self, trainer, record):
        m = trainer.balancer.last_measurement
        self.seen.append((m.logits.clone(), m.labels.clone()))
        self.actions.append(trainer.balancer.action)


@pytest.mark.parametrize("controller", [dict(name="damped", **ALL_ON), dict(name="two_pass")])
def test_a_bare_balancer_fed_the_trainers_measurements_takes_the_same_actions(make_config, controller):
    cfg = make_config(controller=controller, train={"epochs": 3 if controller["name"] == "damped" else 2})
    data = build_data(cfg.data, 0)
    rec = Record()
    trainer = Trainer(cfg, data, [rec])
    trainer.fit()
    bare = RecallBalancer.from_config(cfg, class_names=data.class_names, train_counts=trainer.train_counts)
    assert actions_equal(bare.action, rec.actions[0])
    for (logits, labels), expected in zip(rec.seen, rec.actions[1:], strict=True):
        bare.observe(logits[:50], labels[:50])  # in two batches, as a user's validation loop would
        bare.observe(logits[50:], labels[50:])
        bare.step()
        assert actions_equal(bare.action, expected)
    assert not torch.equal(rec.actions[-1].class_weights, torch.ones(C)), "the loop must have acted"
    assert bare.steps == trainer.epoch


def test_the_hard_class_gains_weight_and_a_handicap_after_low_recall():
    b = RecallBalancer(C, damping=0.5, margin_gain=0.5, aug_gain=1.0, warmup_epochs=0)
    z, y = toy_logits()
    weights = [b.class_weights[2].item()]
    for _ in range(3):
        b.observe(z, y)
        stats = b.step()
        weights.append(b.class_weights[2].item())
    assert stats["recall/2"] < stats["recall_mean"] and stats["recall/2"] == stats["recall_worst"]
    assert weights[0] == 1.0 and weights[1] < weights[2] < weights[3]  # rises while recall stays low
    assert int(b.class_weights.argmax()) == 2 and b.class_weights.mean().item() == pytest.approx(1.0)
    assert int(b.logit_offsets.argmin()) == 2 and b.logit_offsets[2] < 0  # lower training logit: the model compensates
    assert int(b.aug_intensity.argmax()) == 2 and b.aug_intensity[2] > 0
    assert stats["weight/2"] == pytest.approx(weights[-1])


def test_loss_is_the_weighted_loss_on_offset_logits():
    b = RecallBalancer(C, margin_gain=0.5, warmup_epochs=0)
    z, y = toy_logits()
    b.observe(z, y)
    b.step()
    w, offset = b.class_weights, b.logit_offsets
    expected = (w[y] * F.cross_entropy(z + offset, y, reduction="none")).mean()
    assert torch.allclose(b.loss(z, y), expected)
    assert not torch.allclose(b.loss(z, y), F.cross_entropy(z, y))


def test_state_dict_round_trip_gives_identical_later_actions():
    stream = [toy_logits(seed=s, shift=1.0 + s) for s in range(5)]
    a = RecallBalancer(C, **ALL_ON)
    for z, y in stream[:2]:
        a.observe(z, y)
        a.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # what a checkpoint does; weights_only loading must accept it
    b, fresh = RecallBalancer(C, **ALL_ON), RecallBalancer(C, **ALL_ON)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert actions_equal(a.action, b.action) and b.steps == 2
    for z, y in stream[2:]:
        for bal in (a, b, fresh):
            bal.observe(z, y)
            bal.step()
        assert actions_equal(a.action, b.action)
    assert not actions_equal(a.action, fresh.action), "the state must matter, or this test proves nothing"


@pytest.mark.parametrize(("kwargs", "named"), [
    (dict(dampng=0.3), "'dampng'; did you mean 'damping'"),
    (dict(gap_scale=0.0), "gap_scale: 0.0 is out of range"),
    (dict(w_min=2.0), "w_min"),
    (dict(controller="pid"), "controller: 'pid' is not one of"),
    (dict(loss="hinge"), "loss: 'hinge' is not one of"),
    (dict(weights=[1, 2, 3, 4]), "weights is ignored by controller=damped"),
    (dict(controller="static", weights=[1, 2]), "weights has 2 entries"),
    (dict(controller="two_pass"), "needs epochs="),
    (dict(class_names=["a", "b"]), "class_names"),
    (dict(train_counts=[1, 2]), "train_counts"),
    (dict(augment_ops=["rotate"]), "augment_ops: unknown op(s) rotate"),
    (dict(num_classes=1), "num_classes"),
])
def test_a_bad_argument_is_one_value_error_naming_it(kwargs, named):
    kwargs = {"num_classes": C, **kwargs}
    with pytest.raises(ValueError, match="RecallBalancer") as info:
        RecallBalancer(**kwargs)
    assert named in str(info.value) and "controller." not in str(info.value)


def test_calibrate_is_the_identity_until_biases_are_fitted():
    b = RecallBalancer(C)
    z, y = toy_logits(shift=2.0)
    assert b.calibrate(z) is z
    bias = b.fit_calibration(z, y)
    before = per_class_recall(z.argmax(1) == y, y, C)
    after = per_class_recall(b.calibrate(z).argmax(1) == y, y, C)
    assert bias[2] == bias.max() > 0 and after.std() < before.std() and after[2] > before[2]
    assert torch.equal(b.calibrate(z), z + bias)
    restored = RecallBalancer(C)
    restored.load_state_dict(b.state_dict())
    assert torch.equal(restored.calibrate(z), b.calibrate(z))


def test_auto_calibration_records_its_choice_and_zero_means_no_bias():
    from adaptive_lb.config import PosthocConfig

    b = RecallBalancer(C)
    z, y = toy_logits(n=2000, shift=2.0)  # lifting class 2 (0.21 -> 0.6) costs 2-4 pp accuracy (cross-fitted)
    b.posthoc = PosthocConfig(method="equalise", spread_weight="auto")  # may give up 0.3 pp: keeps the raw model
    assert not b.fit_calibration(z, y).any() and b.calibration_choice["spread_weight"] == 0.0
    b.posthoc = PosthocConfig(method="equalise", spread_weight="auto", tolerance=0.05)
    bias = b.fit_calibration(z, y)
    assert b.calibration_choice["spread_weight"] > 0 and bias[2] == bias.max() > 0
    assert [p["spread_weight"] for p in b.calibration_choice["candidates"]] == [0.0, 0.25, 0.5, 1.0, 2.0]
    fair, labels = toy_logits(n=40, shift=0.0)  # 10 images per class, nothing to correct: kept raw
    assert not b.fit_calibration(fair, labels).any() and b.calibration_choice["spread_weight"] == 0.0
    b.fit_calibration(z, y, spread_weight=1.0)  # a fixed weight: no choice made
    assert b.calibration_choice is None
    b.posthoc = PosthocConfig(method="equalise", spread_weight=0.0)  # given 0: the raw model, as the frontier's 0
    assert not b.fit_calibration(z, y).any() and torch.equal(b.calibrate(z), z)


class Intensity(torch.utils.data.Dataset):
    """Reads the balancer's shared intensities in a DataLoader worker."""

    def __init__(self, intensity):
        self.intensity = intensity

    def __len__(self):
        return C

    def __getitem__(self, i):
        return self.intensity[i].clone()


def test_intensities_are_shared_and_updated_in_place_for_workers():
    b = RecallBalancer(C, aug_gain=1.0, warmup_epochs=0)
    shared = b.aug_intensity
    assert shared.is_shared()
    loader = torch.utils.data.DataLoader(Intensity(shared), batch_size=C, num_workers=1, persistent_workers=True)
    assert torch.equal(next(iter(loader)), torch.zeros(C))
    z, y = toy_logits()
    b.observe(z, y)
    b.step()
    assert b.aug_intensity is shared and shared[2] > 0
    assert torch.equal(next(iter(loader)), shared)  # the same worker process sees the update


def test_augment_touches_only_classes_with_intensity():
    b = RecallBalancer(C, aug_gain=1.0, warmup_epochs=0)
    x, y = torch.rand(16, 1, 12, 12), torch.arange(16) % C
    assert torch.equal(b.augment(x, y), x)
    z, yz = toy_logits()
    b.observe(z, yz)
    b.step()
    out = b.augment(x, y)
    changed = (out != x).flatten(1).any(1)  # (16,)
    assert changed[y == 2].all() and not changed[y != 2].any()


# ------------------------------------------------------------------------------------------ distributed
def _rank(rank, world, init, out, shards):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        z, y = toy_logits()
        b = RecallBalancer(C, **ALL_ON)
        for _ in range(2):
            for lo, hi in shards[rank]:  # this rank's share of the held-out batches
                b.observe(z[lo:hi], y[lo:hi])
            stats = b.step()
        mine = torch.cat([torch.arange(lo, hi) for lo, hi in shards[rank]])
        bias = b.fit_calibration(z[mine], y[mine])
        torch.save({"action": list(b.action), "stats": stats, "bias": bias}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_step_gathers_all_ranks_like_one_process(tmp_path):
    import torch.multiprocessing as mp

    shards = [[(0, 130)], [(130, 250), (250, 400)]]  # unequal shares, in rank order
    mp.spawn(_rank, args=(2, f"file://{tmp_path}/init", str(tmp_path), shards), nprocs=2, join=True)
    z, y = toy_logits()
    one = RecallBalancer(C, **ALL_ON)
    for _ in range(2):
        one.observe(z, y)
        stats = one.step()
    bias = one.fit_calibration(z, y)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert actions_equal(ControlAction(*got["action"]), one.action)
        assert got["stats"] == stats and torch.equal(got["bias"], bias)


def test_a_state_saved_before_pair_mixing_existed_still_loads():
    one = RecallBalancer(3, "damped", warmup_epochs=0)
    state = one.state_dict()
    state["action"] = state["action"][:4]  # (weights, aug, offsets, pair margins): the old layout
    del state["controller"]["mix"]
    two = RecallBalancer(3, "damped", warmup_epochs=0)
    two.load_state_dict(state)
    assert not two.blends and torch.equal(two.action.pair_mix, torch.zeros(3, 3))
