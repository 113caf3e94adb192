"""Your own images: an ImageFolder tree (``data.name: imagefolder``) or a CSV manifest (``data.name: csv``).

Both become one ``FileList`` (train files, then test files, each ordered by class and then by path, whatever
the CSV's row order, so a folder and a CSV of the same files give the same splits). Images are decoded once
with PIL, resized to ``image_size`` x ``image_size`` and kept as ``uint8`` grey or RGB, then cached under
``cache_dir`` keyed by a hash of the file list (paths, sizes, modification times), the size and the channels:
a changed folder is decoded again, an unchanged one is read back in well under a second. The result is the
``RawData`` every dataset gives, so splits, samplers, augmentation and the device-resident loader are the same.

Class names are the sorted folder names (torchvision's ``ImageFolder`` rule) or the sorted set of CSV labels.
Without a test set, a stratified test split is carved with a fixed seed (the same images for every
``train.seed``, as a shipped test set would be). Bad input is a one-line ``DataError`` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptive_lb.config import DataConfig
from adaptive_lb.data.datasets import RawData
from adaptive_lb.data.splits import class_counts, stratified_heldout
from adaptive_lb.errors import DataError, WriteError

CACHE_VERSION = 1          # bump when the decoding changes: old cache files are then never read
SKIPPED = {"thumbs.db", "desktop.ini"}  # OS metadata beside images; dot-files are skipped too
CARVE_SEED = 20_261_217    # the carved test split does not depend on train.seed


@dataclass
class FileList:
    """The image files of a dataset: ``paths[:n_train]`` train, the rest test, with their class indices. Paths
    are absolute strings: ``Path`` objects cost ~10 us each, seconds on a 70,000-file folder."""

    paths: list[str]
    labels: list[int]
    n_train: int
    class_names: tuple[str, ...]
    source: str  # where the list came from (folder or CSV files): names the cache family


def load_images(cfg: DataConfig) -> RawData:
    """The ``RawData`` of an image folder or CSV manifest, decoded or read from the cache."""
    # checked here, not in the config: configs/imagefolder.yaml ships without a folder and must still load
    if cfg.name == "imagefolder" and not cfg.root:
        raise DataError("data.name=imagefolder needs data.root=DIR, a folder with train/<class>/<image>")
    if cfg.name == "csv" and not cfg.train_csv:
        raise DataError("data.name=csv needs data.train_csv=FILE, a CSV with columns path,label")
    files = list_imagefolder(Path(cfg.root)) if cfg.name == "imagefolder" else list_csv(cfg)
    check_memory(len(files.paths), cfg)
    x, note = cached_pixels(files, cfg)
    y = torch.tensor(files.labels, dtype=torch.int64)
    n = files.n_train
    raw = RawData(x[:n], y[:n], x[n:], y[n:], files.class_names, notes=(note,))
    return carve_test(raw, cfg.test_fraction) if n == len(files.paths) else raw


# ----------------------------------------------------------------------------------------------- listing
def list_imagefolder(root: Path) -> FileList:
    """``root/train/<class>/**`` (and ``root/test/<class>/**``) as a ``FileList``."""
    if not root.is_dir():
        raise DataError(f"data.root '{root}' does not exist or is not a folder: point it at a folder with "
                        "train/<class>/<image>")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"'{root}' has no train/ folder: imagefolder reads {root}/train/<class>/<image> "
                        "(and test/<class>/<image> when there is a test set)")
    classes = class_folders(train)
    if len(classes) < 2:
        raise DataError(f"'{train}' holds {len(classes)} class folder(s): a classifier needs two or more, "
                        f"one folder per class ({train}/<class>/<image>)")
    paths, labels = folder_samples(train, classes, classes)
    n_train, test = len(paths), root / "test"
    if test.is_dir():
        test_paths, test_labels = folder_samples(test, class_folders(test), classes)
        paths, labels = paths + test_paths, labels + test_labels
    return FileList(paths, labels, n_train, tuple(classes), os.path.abspath(root))


def class_folders(folder: Path) -> list[str]:
    """Sub-folder names of ``folder``, sorted (torchvision's ``find_classes``); hidden ones skipped."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def folder_samples(folder: Path, names: list[str], classes: list[str]) -> tuple[list[str], list[int]]:
    """Every file under ``folder/<name>`` for ``name`` in ``names`` (recursively), labelled by its index in
    ``classes``; ordered by class, then path. An unknown or empty class folder is an error."""
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for name in names:
        if name not in index:
            raise DataError(f"'{folder / name}': class '{name}' is not among the training classes "
                            f"({', '.join(classes)}): rename or remove that test folder")
        found = sorted(_files_under(os.path.abspath(folder / name)))  # by string, as list_csv orders its rows
        if not found:
            raise DataError(f"class folder '{folder / name}' holds no image: add images or remove the folder")
        paths += found
        labels += [index[name]] * len(found)
    return paths, labels


def _files_under(folder: str) -> list[str]:
    """Files below absolute ``folder`` (symlinks followed, as torchvision does), without dot-files and OS metadata."""
    out = []
    for base, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = base + os.sep  # base is absolute and has no trailing separator: cheaper than os.path.join
        out += [prefix + n for n in names if not n.startswith(".") and n.lower() not in SKIPPED]
    return out


def list_csv(cfg: DataConfig) -> FileList:
    """``data.train_csv`` (and ``data.test_csv``) as a ``FileList``; classes are the sorted training labels."""
    train = read_manifest(Path(cfg.train_csv))
    test = read_manifest(Path(cfg.test_csv)) if cfg.test_csv else []
    classes = sorted({label for _, label in train})
    if len(classes) < 2:
        raise DataError(f"'{cfg.train_csv}' has {len(classes)} distinct label(s): a classifier needs two or more")
    unknown = sorted({label for _, label in test} - set(classes))
    if unknown:
        raise DataError(f"'{cfg.test_csv}': label(s) {', '.join(unknown)} are not among the training classes "
                        f"({', '.join(classes)}): fix the labels or add those classes to the training CSV")
    shared = sorted({p for p, _ in train} & {p for p, _ in test})
    if shared:
        raise DataError(f"'{shared[0]}' is listed in both '{cfg.train_csv}' and '{cfg.test_csv}' "
                        f"({len(shared)} such file(s)): a test image must not be trained on")
    index = {c: i for i, c in enumerate(classes)}
    ordered = [sorted((index[label], p) for p, label in rows) for rows in (train, test)]
    rows = ordered[0] + ordered[1]
    source = " + ".join(os.path.abspath(p) for p in (cfg.train_csv, cfg.test_csv) if p)
    return FileList([p for _, p in rows], [c for c, _ in rows], len(train), tuple(classes), source)


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """``(absolute path, label)`` rows of a CSV with columns ``path,label`` (paths relative to the CSV's folder)."""
    if not path.is_file():
        raise DataError(f"CSV '{path}' does not exist: check data.train_csv / data.test_csv")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns or "label" not in columns:
                raise DataError(f"CSV '{path}' needs the columns path,label in its header row; it has "
                                f"{','.join(columns) or 'none'}")
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV '{path}' ({type(exc).__name__}: {exc}): check data.train_csv / "
                        "data.test_csv") from None
    out, seen = [], set()
    for line, row in rows:
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            raise DataError(f"CSV '{path}' line {line}: empty path or label")
        file = os.path.abspath(os.path.join(path.parent, rel))
        if not os.path.isfile(file):
            raise DataError(f"CSV '{path}' line {line}: '{rel}' does not exist (looked for '{file}'; paths are "
                            "relative to the CSV's folder)")
        if file in seen:
            raise DataError(f"CSV '{path}' line {line}: '{rel}' is listed twice")
        seen.add(file)
        out.append((file, label))
    if not out:
        raise DataError(f"CSV '{path}' lists no image: add rows path,label")
    return out


# ------------------------------------------------------------------------------------- decoding, cache
def decode_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file -> ``(channels, size, size)`` uint8; a file PIL cannot read is a ``DataError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):  # squashed, not cropped: nothing of the image is lost
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.array(img, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read '{path}' as an image ({reason}): remove or replace that file") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def cached_pixels(files: FileList, cfg: DataConfig) -> tuple[torch.Tensor, str]:
    """``(N, C, S, S)`` uint8 pixels of ``files``, from the cache when it matches, else decoded and cached;
    and a one-line note saying which."""
    path = cache_path(files, cfg)
    shape = (len(files.paths), cfg.channels, cfg.image_size, cfg.image_size)
    x = _read_cache(path, shape)
    if x is not None:
        return x, f"{len(x):,} images read from the cache {path}"
    start = time.perf_counter()
    x = torch.empty(shape, dtype=torch.uint8)
    for i, p in enumerate(files.paths):
        x[i] = torch.from_numpy(decode_image(p, cfg.image_size, cfg.channels))
    _write_cache(path, x)
    return x, f"{len(x):,} images decoded in {time.perf_counter() - start:.1f} s, cached in {path}"


def cache_path(files: FileList, cfg: DataConfig) -> Path:
    """``<cache_dir>/<family>-<content hash>.pt``: the content hash covers every path, size and mtime."""
    lines = [f"{CACHE_VERSION}|{cfg.image_size}|{cfg.channels}|{files.n_train}\n"]
    for p in files.paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DataError(f"cannot read '{p}' ({exc.strerror}): check the file") from None
        lines.append(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n")
    digest = hashlib.sha256("".join(lines).encode())
    # one file per (source, size, channels): a changed folder replaces its file, other settings keep theirs
    family = hashlib.sha256(f"{files.source}|{cfg.image_size}|{cfg.channels}".encode()).hexdigest()[:16]
    return cache_dir(cfg) / f"{family}-{digest.hexdigest()[:32]}.pt"


def cache_dir(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``$XDG_CACHE_HOME/adaptive_lb``, else ``~/.cache/adaptive_lb``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptive_lb"


def _read_cache(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached tensor, or None when there is none or it is damaged (it is then rebuilt)."""
    try:
        x = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: decode again
        return None
    ok = isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and tuple(x.shape) == shape
    return x if ok else None


def _write_cache(path: Path, x: torch.Tensor) -> None:
    """Write atomically, then drop the family's older files (the folder's previous contents)."""
    from adaptive_lb.rundir import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save(x, fh))
    except (OSError, WriteError) as exc:
        raise DataError(f"cannot write the image cache in '{path.parent}' ({exc}): set data.cache_dir to a "
                        "writable folder") from None
    family = path.name.split("-")[0]
    for old in path.parent.glob(f"{family}-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ memory, test split
def check_memory(n: int, cfg: DataConfig) -> None:
    """Refuse, before decoding, a set whose uint8 pixels exceed ``data.memory_limit_gb`` (default: half of the
    available memory; the rest leaves room for the split copies and training)."""
    need = n * cfg.channels * cfg.image_size ** 2
    if cfg.memory_limit_gb:
        limit, what = cfg.memory_limit_gb * 1e9, "data.memory_limit_gb"
    else:
        available = available_memory()
        if available is None:
            return
        limit, what = available / 2, "half of the available memory"
    if need > limit:
        raise DataError(f"{n:,} images of {cfg.channels}x{cfg.image_size}x{cfg.image_size} take {need / 1e9:.2f} GB, "
                        f"more than {what} ({limit / 1e9:.2f} GB): lower data.image_size, use fewer images, or "
                        "raise data.memory_limit_gb")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), else the physical total, else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def carve_test(raw: RawData, fraction: float) -> RawData:
    """A stratified test split of ``fraction`` of each class, taken from a dataset that has none."""
    num = len(raw.class_names)
    counts = class_counts(raw.y_train, num)
    try:
        keep, test = stratified_heldout(raw.y_train, num, fraction, False,
                                        torch.Generator().manual_seed(CARVE_SEED), raw.class_names)
    except DataError:
        c = int(counts.argmin())
        n = int(counts[c])
        raise DataError(f"class '{raw.class_names[c]}' has {n} image{'s' * (n != 1)}, too few to carve a test split "
                        f"of {fraction:g} from: add images, give a test set (DIR/test/<class>/ or data.test_csv), "
                        "or change data.test_fraction") from None
    note = (f"no test set given: {len(test):,} images ({fraction:g} of each class, the same for every "
            "train.seed) carved as the test split")
    return RawData(raw.x_train[keep], raw.y_train[keep], raw.x_train[test], raw.y_train[test], raw.class_names,
                   notes=(*raw.notes, note))
