"""Datasets by name, read from their own file formats into uint8 tensors.

Each loader returns a ``RawData``: whole train and test splits as ``uint8`` tensors ``(N, C, H, W)`` with
``int64`` labels ``(N,)``, plus class names. Files are read directly (IDX for Fashion-MNIST, CIFAR's pickled
batches); torchvision is used only to download when ``data.download=true``. Text (``names``) comes as
``int64`` character codes ``(N, L)``, 0 = padding, with its ``alphabet`` (``adaptive_lb/data/names.py``).
Your own images (an ImageFolder tree or a CSV manifest) are decoded and cached by ``adaptive_lb/data/images.py``.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptive_lb.config import OWN_DATASETS, DataConfig, SyntheticConfig
from adaptive_lb.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
                       "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
SYNTHETIC_CHUNK = 1 << 24  # float32 noise values drawn at once by make_synthetic (64 MB)


@dataclass
class RawData:
    """Whole train and test splits of a dataset, as loaded from disk."""

    x_train: torch.Tensor  # (N, C, H, W) uint8; text: (N, L) int64 character codes, 0 = padding
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor   # (M, C, H, W) uint8; text: (M, L) int64
    y_test: torch.Tensor   # (M,) int64
    class_names: tuple[str, ...]
    alphabet: str = ""     # text only: code i is alphabet[i - 1]; "" = images
    notes: tuple[str, ...] = ()  # what the loader did that a user should hear of (the CLI prints each line)


def load_dataset(cfg: DataConfig, seed: int) -> RawData:
    """Load dataset ``cfg.name``; missing files raise a ``DataError`` naming the fix."""
    if cfg.name == "fashion_mnist":
        return load_fashion_mnist(cfg.root, cfg.download)
    if cfg.name in CIFAR_FOLDERS:
        return load_cifar(cfg.name, cfg.root, cfg.download)
    if cfg.name == "synthetic":
        return make_synthetic(cfg.synthetic, seed)
    if cfg.name == "names":
        from adaptive_lb.data.names import load_names

        return load_names(cfg.names, cfg.root, seed)
    if cfg.name in OWN_DATASETS:
        from adaptive_lb.data.images import load_images

        return load_images(cfg)
    raise DataError(f"unknown dataset '{cfg.name}': use one of fashion_mnist, cifar10, cifar100, synthetic, names, "
                    "imagefolder, csv")


# ----------------------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read '{path}' ({exc}): the file is damaged; fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte IDX file: fetch the dataset again")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"'{path}' is truncated ({body.size} bytes for shape {shape}): fetch it again")
    return body.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_folders(root: str) -> list[Path]:
    """Where Fashion-MNIST's IDX files are looked for, in order."""
    base = Path(root) if root else Path("data")
    folders = [base, base / "FashionMNIST" / "raw", base / "fashion-mnist"]
    return folders + ([DEBIAN_FASHION_MNIST] if not root else [])


def load_fashion_mnist(root: str, download: bool) -> RawData:
    """Fashion-MNIST from ``root`` (or ./data, or Debian's dataset-fashion-mnist folder)."""
    if download:
        _torchvision_download("fashion_mnist", Path(root or "data"))
    for folder in fashion_mnist_folders(root):
        paths = {k: _find_idx(folder, stem) for k, stem in FASHION_MNIST_FILES.items()}
        if all(paths.values()):
            arrays = {k: torch.from_numpy(read_idx(p).copy()) for k, p in paths.items()}
            for split in ("train", "test"):
                if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
                    raise DataError(f"Fashion-MNIST in '{folder}': {split} images and labels differ in count")
            return RawData(arrays["train_x"].unsqueeze(1), arrays["train_y"].long(),
                           arrays["test_x"].unsqueeze(1), arrays["test_y"].long(), FASHION_MNIST_CLASSES)
    looked = ", ".join(str(f) for f in fashion_mnist_folders(root))
    raise DataError(f"Fashion-MNIST files not found (looked in {looked}): run "
                    "'apt-get install dataset-fashion-mnist', set data.root=DIR, or set data.download=true")


# ----------------------------------------------------------------------------------------------- CIFAR
def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"CIFAR file '{path}' is missing: fetch the dataset again") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise DataError(f"CIFAR file '{path}' cannot be read ({type(exc).__name__}): fetch it again") from None


def _cifar_arrays(batch: dict, label_key: bytes, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if b"data" not in batch or label_key not in batch:
        raise DataError(f"CIFAR file '{path}' lacks 'data' or labels: it is not a CIFAR batch")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
    return torch.from_numpy(x.copy()), torch.as_tensor(batch[label_key], dtype=torch.int64)


def load_cifar(name: str, root: str, download: bool) -> RawData:
    """CIFAR-10/100 from the python-pickle release (``cifar-10-batches-py`` / ``cifar-100-python``)."""
    base = Path(root or "data")
    if download:
        _torchvision_download(name, base)
    folder = base / CIFAR_FOLDERS[name]
    if not folder.is_dir():
        raise DataError(f"{name} not found: '{folder}' does not exist; put CIFAR's python release under "
                        f"data.root, or set data.download=true")
    if name == "cifar10":
        train_files, test_files, meta_file = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"
        label_key, names_key = b"labels", b"label_names"
    else:
        train_files, test_files, meta_file = ["train"], ["test"], "meta"
        label_key, names_key = b"fine_labels", b"fine_label_names"
    splits = []
    for files in (train_files, test_files):
        parts = [_cifar_arrays(_unpickle(folder / f), label_key, folder / f) for f in files]
        splits.append((torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])))
    meta = _unpickle(folder / meta_file)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, []))
    if not names:
        raise DataError(f"'{folder / meta_file}' lacks class names: it is not CIFAR's meta file")
    return RawData(splits[0][0], splits[0][1], splits[1][0], splits[1][1], names)


def _torchvision_download(name: str, root: Path) -> None:
    """Fetch a dataset with torchvision (needs internet); files land where our readers look."""
    import torchvision

    cls = {"fashion_mnist": torchvision.datasets.FashionMNIST, "cifar10": torchvision.datasets.CIFAR10,
           "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise DataError(f"download of {name} into '{root}' failed ({type(exc).__name__}): copy the files "
                        "there by hand or, for Fashion-MNIST, 'apt-get install dataset-fashion-mnist'") from None


# ------------------------------------------------------------------------------------------- synthetic
def make_synthetic(cfg: SyntheticConfig, seed: int) -> RawData:
    """Noisy copies of smooth random class prototypes; later classes are noisier, hence harder.

    Prototypes share a common component, so classes overlap and errors are uneven across classes: a
    miniature of learnability imbalance that trains in seconds.
    """
    gen = torch.Generator().manual_seed(10_007 + seed)
    c, s = cfg.num_classes, cfg.image_size
    coarse = torch.rand(c + 1, 1, 1, max(2, s // 4), max(2, s // 4), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse.squeeze(1), size=(s, s), mode="bilinear",
                                             align_corners=False)  # (C+1, 1, S, S)
    protos = 0.5 * smooth[:c] + 0.5 * smooth[c:]  # shared component -> overlapping classes
    scale = 1.0 + cfg.difficulty_spread * torch.arange(c) / max(c - 1, 1)  # (C,)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(c).repeat_interleave(per_class)
        x = torch.empty(len(y), 1, s, s, dtype=torch.uint8)
        # whole classes at a time once the float noise would pass SYNTHETIC_CHUNK values (1,000 classes of
        # 28x28 images would take GBs at once); smaller sets are drawn in one go, as they always were
        whole = len(y) * s * s <= SYNTHETIC_CHUNK
        step = len(y) if whole else max(1, SYNTHETIC_CHUNK // (s * s * per_class)) * per_class
        for start in range(0, len(y), step):
            part = y[start:start + step]
            noise = torch.randn(len(part), 1, s, s, generator=gen) * (cfg.noise * scale[part]).view(-1, 1, 1, 1)
            x[start:start + step] = (protos[part] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return x, y

    x_train, y_train = draw(cfg.per_class)
    x_test, y_test = draw(max(1, cfg.per_class // 3))
    return RawData(x_train, y_train, x_test, y_test, tuple(f"class_{i}" for i in range(c)))
