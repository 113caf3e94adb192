import pytest
import torch

from adaptive_lb.config import DataConfig, SyntheticConfig
from adaptive_lb.data import build_data
from adaptive_lb.data.splits import class_counts, long_tail_counts, stratified_heldout, take_per_class
from adaptive_lb.errors import DataError


def labels(counts):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])


def test_take_per_class_caps_each_class():
    y = labels([10, 3, 7])
    idx = take_per_class(y, [5, 5, 5], torch.Generator().manual_seed(0))
    assert class_counts(y[idx], 3).tolist() == [5, 3, 5]
    assert len(set(idx.tolist())) == len(idx)


@pytest.mark.parametrize("balanced, expected", [(True, [2, 2, 2]), (False, [10, 5, 2])])
def test_heldout_is_stratified_disjoint_and_seeded(balanced, expected):
    y = labels([100, 50, 20])
    split = lambda seed: stratified_heldout(y, 3, 0.1, balanced, torch.Generator().manual_seed(seed), "abc")  # noqa: E731
    train, held = split(0)
    assert class_counts(y[held], 3).tolist() == expected
    assert set(train.tolist()).isdisjoint(held.tolist())
    assert len(train) + len(held) == len(y)
    assert torch.equal(held, split(0)[1])
    assert not torch.equal(held, split(1)[1])


def test_heldout_refuses_a_class_without_samples():
    y = labels([100, 100, 4])
    with pytest.raises(DataError, match="class 'c' has 4 training samples"):
        stratified_heldout(y, 3, 0.1, True, torch.Generator(), "abc")


def test_long_tail_counts_by_hand():
    # exp, rho=100, 3 classes: 1000 * 100^(-c/2) = 1000, 100, 10
    assert long_tail_counts([1000, 1000, 1000], "exp", 100.0) == [1000, 100, 10]
    # step, rho=10, half of 4 classes minor
    assert long_tail_counts([500] * 4, "step", 10.0, 0.5) == [500, 500, 50, 50]
    assert long_tail_counts([7, 9], "none", 10.0) == [7, 9]
    # never more than available, never below 1
    assert long_tail_counts([1000, 20, 1000], "exp", 10.0) == [1000, 20, 100]
    assert long_tail_counts([1000, 1000], "exp", 1e6) == [1000, 1]


def test_build_data_order_subset_heldout_longtail():
    cfg = DataConfig(name="synthetic", subset_per_class=200, heldout_fraction=0.1, long_tail="exp",
                     imbalance_ratio=10.0, synthetic=SyntheticConfig(num_classes=3, per_class=300, image_size=8))
    data = build_data(cfg, seed=0)
    # held-out is balanced and carved before the long tail: 20 per class, cut into control and select halves
    assert class_counts(data.heldout.y, 3).tolist() == [10, 10, 10]
    assert class_counts(data.select.y, 3).tolist() == [10, 10, 10]
    assert len(torch.cat([data.heldout.x, data.select.x]).unique(dim=0)) == 60, "control and select are disjoint"
    # training part follows the profile on the 180 left per class: 180, 180/sqrt(10), 18
    assert class_counts(data.train.y, 3).tolist() == [180, 56, 18]
    assert class_counts(data.test.y, 3).tolist() == [100, 100, 100]
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape[1:] == (1, 8, 8)
    again = build_data(cfg, seed=0)
    assert torch.equal(again.heldout.x, data.heldout.x) and torch.equal(again.train.y, data.train.y)


def test_select_split_leaves_the_training_part_unchanged_and_can_be_off():
    base = dict(name="synthetic", heldout_fraction=0.2, synthetic=SyntheticConfig(num_classes=3, per_class=100,
                                                                                  image_size=8))
    halves, whole = build_data(DataConfig(**base), seed=3), build_data(DataConfig(**base, select_fraction=0.0), seed=3)
    assert whole.select is None and "select" not in whole.splits()
    assert torch.equal(halves.train.x, whole.train.x) and torch.equal(halves.test.y, whole.test.y)
    both = torch.cat([halves.heldout.x, halves.select.x]).flatten(1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, whole.heldout.x.flatten(1).tolist()))
    assert class_counts(halves.select.y, 3).tolist() == [10, 10, 10]
    with pytest.raises(DataError, match="too few to set 0.5 of them aside as the select split"):
        build_data(DataConfig(**{**base, "heldout_fraction": 0.01}), seed=3)
