"""Carve a loaded dataset into the three splits a run uses.

Order matters for honest results: the per-class subset (quick runs) is taken first, then the stratified
held-out split, and only then the long-tail profile, on the training part alone, so the held-out
yardstick stays balanced. The held-out split is cut in two, stratified: ``heldout`` (the control half, read
by the controller every epoch) and ``select`` (calibration fit, tuning objective, choice of defaults), drawn
with a generator of its own so that the training part does not depend on ``select_fraction``. The test
split is never touched except by ``test_subset_per_class``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from adaptive_lb.config import DataConfig
from adaptive_lb.data.datasets import load_dataset
from adaptive_lb.data.splits import class_counts, long_tail_counts, stratified_heldout, take_per_class
from adaptive_lb.errors import DataError


@dataclass
class Split:
    """Images and labels of one split, kept whole (airbench style: no per-sample Python)."""

    x: torch.Tensor  # (N, C, H, W) uint8; text: (N, L) int64 character codes, 0 = padding
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    """The splits of a run plus what the model and metrics need to know about them."""

    train: Split
    heldout: Split  # the control half of the held-out split: read by the controller every epoch
    test: Split
    class_names: tuple[str, ...]
    mean: torch.Tensor  # (C_in,) per-channel mean of the training part, on the [0, 1] scale (text: 0)
    std: torch.Tensor   # (C_in,) per-channel std of the training part (text: 1)
    alphabet: str = ""  # text only: character code i is alphabet[i - 1], 0 = padding; "" = images
    select: Split | None = None  # the select half: calibration, tuning, defaults; None = no select split
    notes: tuple[str, ...] = ()  # the loader's one-line notes (a carved test split, the image cache)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_text(self) -> bool:
        return bool(self.alphabet)

    @property
    def in_channels(self) -> int:
        """Image channels; for text, the number of input codes (alphabet + padding), the model's vocabulary."""
        return len(self.alphabet) + 1 if self.is_text else self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]

    def fingerprint(self) -> dict:
        """What identifies these splits: class names, split sizes and a SHA-256 of every split's inputs and labels.

        Stored in checkpoints, so a run cannot be resumed or evaluated on other data (a rebuilt cache, replaced
        files) without notice. Hashes ~50 MB (full Fashion-MNIST) in a fraction of a second.
        """
        digest = hashlib.sha256()
        for split in self.splits().values():
            for t in (split.x, split.y):
                digest.update(str((t.dtype, tuple(t.shape))).encode())
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return {"class_names": list(self.class_names),
                "sizes": {name: len(split) for name, split in self.splits().items()},
                "sha256": digest.hexdigest()}

    def splits(self) -> dict[str, Split]:
        """``train``, ``heldout`` (control), ``select`` (when there is one) and ``test``, by name."""
        named = {"train": self.train, "heldout": self.heldout, "select": self.select, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(self.train.to(device), self.heldout.to(device), self.test.to(device),
                          self.class_names, self.mean.to(device), self.std.to(device), self.alphabet,
                          self.select.to(device) if self.select is not None else None, self.notes)


def fingerprint_mismatch(saved: dict, current: dict) -> str | None:
    """How two ``DataBundle.fingerprint()`` results differ, in words; ``None`` when they agree."""
    if saved["class_names"] != current["class_names"]:
        return (f"classes {', '.join(saved['class_names'])} then, {', '.join(current['class_names'])} now"
                if len(saved["class_names"]) + len(current["class_names"]) <= 24
                else f"{len(saved['class_names'])} classes then, {len(current['class_names'])} now, or other names")
    if saved["sizes"] != current["sizes"]:
        then, now = saved["sizes"], current["sizes"]
        return "split sizes " + ", ".join(f"{k} {then[k]} then, {now.get(k)} now" for k in then if then[k] != now.get(k))
    if saved["sha256"] != current["sha256"]:
        return "same sizes but other images or labels (the dataset files or cache changed)"
    return None


def build_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load dataset ``cfg.name`` and carve train / held-out / test splits, deterministically for ``seed``."""
    raw = load_dataset(cfg, seed)
    names, num = raw.class_names, len(raw.class_names)
    for split, y in (("train", raw.y_train), ("test", raw.y_test)):
        if len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= num:
            raise DataError(f"{cfg.name}: {split} labels must lie in [0, {num}); the files are damaged")
    gen = torch.Generator().manual_seed(1_000_003 * (seed + 1))
    y = raw.y_train
    pool = torch.arange(len(y))
    if cfg.subset_per_class:
        pool = take_per_class(y, [cfg.subset_per_class] * num, gen)
    fix = ("raise data.subset_per_class or data.heldout_fraction" if cfg.subset_per_class
           else "add images to that class or raise data.heldout_fraction")
    tr, ho = stratified_heldout(y[pool], num, cfg.heldout_fraction, cfg.heldout_balanced, gen, names, fix)
    train_idx, held_idx = pool[tr], pool[ho]
    held_idx, select_idx = _split_select(y, held_idx, cfg, seed, names)
    if cfg.long_tail != "none":
        target = long_tail_counts(class_counts(y[train_idx], num).tolist(), cfg.long_tail,
                                  cfg.imbalance_ratio, cfg.step_minor_fraction)
        train_idx = train_idx[take_per_class(y[train_idx], target, gen)]
    test_idx = torch.arange(len(raw.y_test))
    if cfg.test_subset_per_class:
        test_idx = take_per_class(raw.y_test, [cfg.test_subset_per_class] * num, gen)
    missing = [names[c] for c in range(num) if not (raw.y_test[test_idx] == c).any()]
    if missing:
        raise DataError(f"{cfg.name}: the test split has no sample of class(es) {', '.join(missing)}: "
                        "the files are incomplete")
    x_train = raw.x_train[train_idx]
    mean, std = (torch.zeros(1), torch.ones(1)) if raw.alphabet else channel_stats(x_train)  # text: codes as they are
    select = Split(raw.x_train[select_idx], y[select_idx]) if select_idx is not None else None
    return DataBundle(Split(x_train, y[train_idx]), Split(raw.x_train[held_idx], y[held_idx]),
                      Split(raw.x_test[test_idx], raw.y_test[test_idx]), names, mean, std, raw.alphabet, select,
                      raw.notes)


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of ``(N, C, H, W)`` uint8 images on the [0, 1] scale, ``(C,)`` float32.

    Summed in float64 chunks (exact for integer pixels) rather than over a float copy of the whole training
    part, which would take 8x its bytes: a large own-image set would run out of memory here.
    """
    c = x.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].transpose(0, 1).reshape(c, -1).double()  # (C, chunk*H*W)
        total += part.sum(dim=1)
        squares += (part * part).sum(dim=1)
    n = x.numel() // c
    var = (squares - total * total / n) / max(n - 1, 1)
    return (total / n / 255).float(), (var.clamp_min(0).sqrt() / 255).float().clamp_min(1e-6)


def _split_select(y: torch.Tensor, held_idx: torch.Tensor, cfg: DataConfig, seed: int,
                  names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Held-out indices cut into (control, select), stratified; select is None when ``select_fraction`` is 0."""
    if cfg.select_fraction == 0:
        return held_idx, None
    gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + 1)  # its own stream: training data unchanged
    try:
        control, select = stratified_heldout(y[held_idx], len(names), cfg.select_fraction, cfg.heldout_balanced,
                                             gen, names)
    except DataError:
        counts = class_counts(y[held_idx], len(names))
        c = int(counts.argmin())
        raise DataError(f"class '{names[c]}' has {int(counts[c])} held-out samples, too few to set "
                        f"{cfg.select_fraction:g} of them aside as the select split: raise data.heldout_fraction "
                        "or set data.select_fraction=0") from None
    return held_idx[control], held_idx[select]
