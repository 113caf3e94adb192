import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptive_lb.config import DataConfig, SyntheticConfig
from adaptive_lb.data import build_data
from adaptive_lb.data.datasets import load_dataset, make_synthetic, read_idx
from adaptive_lb.errors import DataError


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion_mnist(folder, n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_idx_reader_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)


def test_idx_reader_rejects_truncated(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw"])
def test_fashion_mnist_from_root(tmp_path, layout):
    write_fake_fashion_mnist(tmp_path / layout)
    raw = load_dataset(DataConfig(root=str(tmp_path)), seed=0)
    assert raw.x_train.shape == (40, 1, 28, 28) and raw.x_train.dtype == torch.uint8
    assert raw.y_test.tolist() == [i % 10 for i in range(20)]
    assert raw.class_names[6] == "Shirt"


def test_fashion_mnist_missing_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(root=str(tmp_path / "empty")), seed=0)


def test_real_fashion_mnist_loads(fmnist_available):
    raw = load_dataset(DataConfig(), seed=0)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.y_train).tolist() == [6000] * 10


def write_fake_cifar(root, name, n_per_file=20):
    """Tiny files in CIFAR's own python-pickle format (the real release's layout and keys)."""
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, files, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + [
            "test_batch"], b"labels"
        meta, meta_name, classes = {b"label_names": [f"c{i}".encode() for i in range(10)]}, "batches.meta", 10
    else:
        folder, files, label_key = root / "cifar-100-python", ["train", "test"], b"fine_labels"
        meta, meta_name, classes = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, "meta", 100
    folder.mkdir(parents=True)
    for f in files:
        batch = {b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
                 label_key: [i % classes for i in range(n_per_file)], b"batch_label": f.encode()}
        with open(folder / f, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / meta_name, "wb") as fh:
        pickle.dump(meta, fh)


@pytest.mark.parametrize("name, n_classes, n_train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_pickle_format(tmp_path, name, n_classes, n_train):
    write_fake_cifar(tmp_path, name)
    raw = load_dataset(DataConfig(name=name, root=str(tmp_path)), seed=0)
    assert raw.x_train.shape == (n_train, 3, 32, 32) and raw.x_test.shape == (20, 3, 32, 32)
    assert len(raw.class_names) == n_classes
    # first pixel row of the red plane is the first 32 bytes of the record
    with open(next((tmp_path).rglob("test*")), "rb") as fh:
        first = pickle.load(fh, encoding="bytes")[b"data"][0]
    assert raw.x_test[0, 0, 0].tolist() == first[:32].tolist()


def test_cifar_end_to_end_split(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_per_file=40)
    data = build_data(DataConfig(name="cifar10", root=str(tmp_path), heldout_fraction=0.25), seed=0)
    assert len(data.heldout) + len(data.select) == 10 * 5 and data.in_channels == 3 and data.image_size == 32


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError, match="cifar10 not found"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)


def test_synthetic_is_deterministic_and_harder_for_later_classes():
    cfg = SyntheticConfig(num_classes=3, per_class=50, image_size=10)
    a, b = make_synthetic(cfg, 0), make_synthetic(cfg, 0)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, make_synthetic(cfg, 1).x_train)
    assert a.x_train.shape == (150, 1, 10, 10) and len(a.y_test) == 3 * 16
    spread = [a.x_train[a.y_train == c].float().std(dim=0).mean().item() for c in range(3)]
    assert spread[0] < spread[1] < spread[2]


def test_cifar10_lt100_config_runs_on_cifar_format_files(tmp_path):
    from adaptive_lb.config import load_config
    from adaptive_lb.trainer import Trainer

    write_fake_cifar(tmp_path, "cifar10", n_per_file=60)  # 30 images per class in the training files
    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config([root / "cifar10_lt100.yaml", root / "methods" / "ldam_drw.yaml"],
                      [f"data.root={tmp_path}", "data.heldout_fraction=0.2", "model.name=resnet20", "train.epochs=2",
                       "train.batch_size=32", "train.device=cpu", "optim.warmup_epochs=0"])
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    # 6 held-out per class first, then n_c = 24 * 100^(-c/9) on the rest: 24, 14, 8, ..., 1 (never 0)
    assert trainer.train_counts.tolist() == [24, 14, 8, 5, 3, 1, 1, 1, 1, 1]
    assert len(trainer.data.heldout) == len(trainer.data.select) == 30
    summary = trainer.fit()
    assert summary["epochs"] == 2 and len(summary["test"]["tpr"]) == 10
