import itertools

import pytest
import torch

from adaptive_lb.augment import AT_FULL, TensorAugmenter, op_args
from adaptive_lb.augment.albu import AlbumentationsLoader, build_pipeline
from adaptive_lb.config import AUG_OPS
from adaptive_lb.data.build import Split

LEVELS_TO_CHECK = [0.0, 0.25, 0.5, 0.75, 1.0]


def images(n=64, size=16, seed=0):
    """uint8 ``(n, 1, size, size)`` blobs with structure, so flips and shifts change pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(2, size // 2, (2,), generator=g).tolist()
        x[i, 0, r:r + size // 3, c:c + size // 4] = 0.6 + 0.4 * torch.rand(1, generator=g)
    return (x * 255).round().to(torch.uint8)


def tensor_change(op, a, x):
    torch.manual_seed(0)
    x01 = x.float() / 255
    y = torch.zeros(len(x), dtype=torch.long)
    out = TensorAugmenter([op])(x01, torch.tensor([a])[y])
    return (out - x01).abs().mean().item()


def albu_change(op, a, x):
    pipe = build_pipeline([op], a)
    total = 0.0
    for i in range(len(x)):
        pipe.set_random_seed(i)
        img = x[i].permute(1, 2, 0).numpy()
        total += (torch.from_numpy(pipe(image=img)["image"]).float() - torch.from_numpy(img).float()).abs().mean()
    return float(total) / len(x) / 255


@pytest.mark.parametrize("backend", [tensor_change, albu_change], ids=["tensor", "albumentations"])
@pytest.mark.parametrize("op", AUG_OPS)
def test_perturbation_grows_with_intensity_and_zero_is_identity(backend, op):
    x = images()
    change = [backend(op, a, x) for a in LEVELS_TO_CHECK]
    assert change[0] == 0.0, "intensity 0 must leave images untouched"
    assert all(b > a for a, b in itertools.pairwise(change)), f"{op}: {change}"


def test_tensor_backend_gives_each_class_its_own_magnitude():
    x01 = images(64).float() / 255
    y = torch.arange(64) % 2  # both classes in one batch
    torch.manual_seed(0)
    out = TensorAugmenter(AUG_OPS)(x01, torch.tensor([0.0, 1.0])[y])
    change = (out - x01).abs().flatten(1).mean(1)  # (B,)
    assert (change[y == 0] == 0).all() and (change[y == 1] > 0).all()
    torch.manual_seed(0)
    mild = TensorAugmenter(AUG_OPS)(x01, torch.tensor([0.2, 1.0])[y])
    mild_change = (mild - x01).abs().flatten(1).mean(1)
    assert mild_change[y == 0].mean() < mild_change[y == 1].mean()


def test_op_table_is_linear_in_intensity_and_checks_range():
    assert op_args(0.5)["rotate_deg"] == pytest.approx(AT_FULL["rotate_deg"] / 2)
    assert op_args(0.0)["noise_std"] == 0.0
    with pytest.raises(ValueError, match="outside"):
        op_args(1.5)


def _loader(workers, n=48):
    x = images(n, seed=1)
    split = Split(x, torch.arange(n) % 3)
    return AlbumentationsLoader(split, torch.tensor([0.2]), torch.tensor([0.3]), 16, False,
                                torch.device("cpu"), AUG_OPS, 3, workers)


def _epoch(loader, seed, intensity):
    xs, ys = zip(*loader.batches(torch.Generator().manual_seed(seed), torch.tensor(intensity)), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_albumentations_updates_reach_persistent_workers():
    loader = _loader(workers=2)
    clean, y = _epoch(loader, 0, [0.0, 0.0, 0.0])
    workers = loader.loader._iterator._workers  # persistent: the same processes serve every epoch
    pids = [w.pid for w in workers]
    aug, y2 = _epoch(loader, 0, [0.0, 0.0, 1.0])  # same order (same seed), class 2 now augmented
    assert [w.pid for w in loader.loader._iterator._workers] == pids
    assert torch.equal(y, y2)
    assert torch.equal(aug[y != 2], clean[y != 2])
    assert not torch.equal(aug[y == 2], clean[y == 2])


def test_albumentations_is_deterministic_whatever_the_worker_count():
    a = _epoch(_loader(workers=0), 3, [0.3, 0.6, 1.0])
    b = _epoch(_loader(workers=2), 3, [0.3, 0.6, 1.0])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_epoch_seeds_reach_persistent_workers():
    """Workers forked once must see each new epoch's augmentation seed (shared memory), so two epochs with
    workers give exactly what the same epochs give in the main process."""
    pooled, inline = _loader(workers=2), _loader(workers=0)
    for seed in (3, 4):
        a, b = _epoch(pooled, seed, [0.5, 0.5, 0.5]), _epoch(inline, seed, [0.5, 0.5, 0.5])
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"epoch seed {seed}"


def test_albumentations_oversample_aug_augments_copies_only():
    labels = torch.tensor([0] * 12 + [1] * 3)
    split = Split(images(15), labels)
    loader = AlbumentationsLoader(split, torch.zeros(1), torch.ones(1), 8, False, torch.device("cpu"), AUG_OPS, 2,
                                  workers=0, sampler="oversample_aug", copy_aug=0.8)
    ys = torch.cat([yb for _, yb in loader.batches(torch.Generator().manual_seed(0), torch.zeros(2))])
    assert len(loader) == 3 and torch.bincount(ys).tolist() == [12, 12]
    ds = loader.dataset
    assert all(torch.equal(ds[i][0], split.x[i]) for i in range(15)), "originals stay untouched at intensity 0"
    assert not torch.equal(ds[12 + 15][0], split.x[12]), "index i + N is an augmented copy of image i"
    assert ds[12 + 15][1] == 1
