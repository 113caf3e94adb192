"""Your own images: an image folder and a CSV manifest of Fashion-MNIST PNGs, the cache, bad input, batch auto."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, run_cli
from PIL import Image

from adaptive_lb.cli import main
from adaptive_lb.config_io import load_config
from adaptive_lb.data import build_data
from adaptive_lb.data import images as images_mod
from adaptive_lb.data.datasets import load_dataset, load_fashion_mnist
from adaptive_lb.data.loader import auto_batch_size
from adaptive_lb.errors import ConfigError, DataError
from adaptive_lb.trainer import resolve_config

CONFIG = str(ROOT / "configs" / "imagefolder.yaml")
CLASSES = {0: "T-shirt", 1: "Trouser", 7: "Sneaker"}  # Fashion-MNIST labels -> folder names
TRAIN_N, TEST_N = 20, 6
GREY = ["data.channels=1", "data.image_size=28"]


def _write_split(root: Path, split: str, x: torch.Tensor, y: torch.Tensor, per_class: int) -> list[tuple[str, str]]:
    rows = []
    for label, name in CLASSES.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in (y == label).nonzero().flatten()[:per_class].tolist():
            Image.fromarray(x[i, 0].numpy()).save(folder / f"{i:05d}.png")
            rows.append((f"{split}/{name}/{i:05d}.png", name))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("path", "label")) -> Path:
    rows = list(rows)
    random.Random(0).shuffle(rows)  # the row order must not matter
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fmnist_available) -> Path:
    """``root/{train,test}/<class>/*.png``: 3 Fashion-MNIST classes x 20 (+ 6 test) grey 28x28 PNGs, and
    ``root/train.csv``, ``root/test.csv`` listing the same files."""
    root = tmp_path_factory.mktemp("own") / "images"
    raw = load_fashion_mnist("", False)
    train_rows = _write_split(root, "train", raw.x_train, raw.y_train, TRAIN_N)
    test_rows = _write_split(root, "test", raw.x_test, raw.y_test, TEST_N)
    _write_csv(root / "train.csv", train_rows)
    _write_csv(root / "test.csv", test_rows)
    return root


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "images"
    shutil.copytree(folder, target)
    return target


def _data_cfg(tmp_path: Path, *overrides: str):
    return load_config(CONFIG, [*GREY, f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def test_folder_and_csv_give_the_same_splits(folder, tmp_path):
    by_folder = _data_cfg(tmp_path, f"data.root={folder}")
    by_csv = _data_cfg(tmp_path, "data.name=csv", f"data.train_csv={folder / 'train.csv'}",
                       f"data.test_csv={folder / 'test.csv'}")
    a, b = build_data(by_folder.data, 0), build_data(by_csv.data, 0)
    assert a.class_names == b.class_names == ("Sneaker", "T-shirt", "Trouser")  # sorted folder names
    assert a.splits().keys() == b.splits().keys() == {"train", "heldout", "select", "test"}
    for name, split in a.splits().items():
        assert torch.equal(split.x, b.splits()[name].x) and torch.equal(split.y, b.splits()[name].y), name
    assert a.fingerprint() == b.fingerprint()
    assert len(a.test) == 3 * TEST_N and len(a.train) + len(a.heldout) + len(a.select) == 3 * TRAIN_N
    assert a.train.x.dtype == torch.uint8 and a.train.x.shape[1:] == (1, 28, 28)
    # the pixels are the IDX file's, byte for byte (PNG round trip, no resize at 28)
    raw = load_fashion_mnist("", False)
    sneakers = raw.x_test[raw.y_test == 7][:TEST_N]
    assert torch.equal(a.test.x[a.test.y == 0], sneakers)


def test_rgb_grey_and_resize(tmp_path):
    root = tmp_path / "rgb"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("red", "blue"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    base = [f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}", "data.image_size=8"]
    rgb = load_dataset(load_config(CONFIG, base).data, 0)
    assert rgb.x_train.shape == (8, 3, 8, 8) and rgb.class_names == ("blue", "red")
    first = Image.open(root / "train" / "blue" / "0.png").resize((8, 8), Image.Resampling.BILINEAR)
    assert torch.equal(rgb.x_train[0], torch.from_numpy(np.array(first)).permute(2, 0, 1))  # class, then path
    grey = load_dataset(load_config(CONFIG, [*base, "data.channels=1"]).data, 0)
    assert grey.x_train.shape == (8, 1, 8, 8) and torch.equal(grey.y_test, rgb.y_test)
    grey_first = Image.open(root / "train" / "blue" / "0.png").convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    assert torch.equal(grey.x_train[0, 0], torch.from_numpy(np.array(grey_first)))  # converted, then resized
    assert len(list((tmp_path / "c").iterdir())) == 2  # one cache file per (size, channels)


def test_decoded_pixels_match_pil(tmp_path):
    """Every decoded image is PIL's convert + bilinear resize, in CHW order; grey PNGs read as RGB repeat."""
    path = tmp_path / "a.png"
    img = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    expect = np.array(Image.fromarray(img).resize((8, 8), Image.Resampling.BILINEAR))
    assert np.array_equal(images_mod.decode_image(path, 8, 3), expect.transpose(2, 0, 1))
    Image.fromarray(img[..., 0]).save(path)
    rgb = images_mod.decode_image(path, 10, 3)
    assert rgb.shape == (3, 10, 10) and np.array_equal(rgb[0], rgb[2])


def test_cache_hit_and_refresh(folder, tmp_path, monkeypatch):
    root = _copy(folder, tmp_path)
    calls = []
    real = images_mod.decode_image
    monkeypatch.setattr(images_mod, "decode_image", lambda *a: calls.append(a[0]) or real(*a))
    cfg = _data_cfg(tmp_path, f"data.root={root}").data
    first = load_dataset(cfg, 0)
    assert len(calls) == 3 * (TRAIN_N + TEST_N) and "decoded" in first.notes[0]
    calls.clear()
    second = load_dataset(cfg, 0)
    assert calls == [] and "read from the cache" in second.notes[0]
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    # a changed folder is decoded again, and the old cache file goes
    (root / "train" / "Trouser" / next(iter(sorted(p.name for p in (root / "train" / "Trouser").iterdir())))).unlink()
    third = load_dataset(cfg, 0)
    assert len(calls) == 3 * (TRAIN_N + TEST_N) - 1 and len(third.y_train) == 3 * TRAIN_N - 1
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_carved_test_split_is_stratified_and_seed_independent(folder, tmp_path):
    root = _copy(folder, tmp_path)
    shutil.rmtree(root / "test")
    cfg = _data_cfg(tmp_path, f"data.root={root}").data
    a, b = build_data(cfg, 0), build_data(cfg, 1)
    assert torch.equal(a.test.x, b.test.x) and torch.bincount(a.test.y).tolist() == [4, 4, 4]  # 0.2 x 20
    assert not torch.equal(a.train.x, b.train.x)  # the held-out split does follow the seed
    assert any("carved as the test split" in n for n in a.notes)


@pytest.mark.parametrize("images, expect", [(0, 16), (100, 16), (849, 16), (850, 17), (2_700, 54),
                                            (12_799, 255), (12_800, 256), (54_000, 256)])
def test_auto_batch_size_rule(images, expect):
    assert auto_batch_size(images) == expect
    assert expect in (16, 256) or -(-images // expect) >= 50  # unclamped: at least 50 steps per epoch


def test_auto_batch_size_resolves_from_the_epoch_size(make_config):
    cfg = make_config(data={"synthetic": {"num_classes": 4, "per_class": 300, "image_size": 8}},
                      train={"batch_size": "auto"})
    data = build_data(cfg.data, 0)
    assert resolve_config(cfg, data).train.batch_size == 960 // 50  # 4 x (300 - 60 held out)
    assert resolve_config(resolve_config(cfg, data), data) == resolve_config(cfg, data)
    lt = make_config(data={"synthetic": {"num_classes": 4, "per_class": 300, "image_size": 8}, "long_tail": "exp",
                           "imbalance_ratio": 10.0, "sampler": "oversample"}, train={"batch_size": "auto"})
    assert resolve_config(lt, build_data(lt.data, 0)).train.batch_size == 4 * 240 // 50  # over-sampled epoch
    with pytest.raises(ConfigError, match="train.batch_size: 'big' is not a number or auto"):
        make_config(train={"batch_size": "big"})
    with pytest.raises(ConfigError, match="expected int or auto, got float"):
        make_config(train={"batch_size": 2.5})


def test_cli_trains_on_an_image_folder(folder, tmp_path):
    out = tmp_path / "run"
    res = run_cli("train", CONFIG, f"data.root={folder}", *GREY, f"data.cache_dir={tmp_path / 'cache'}",
                  "train.epochs=2", "controller.warmup_epochs=0", "train.threads=1", "--out", str(out),
                  "--quiet", "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "images decoded" in res.stderr and "train.batch_size=auto -> 16" in res.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 16 and saved["data"]["name"] == "imagefolder"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[1]["class_weights"] != [1.0, 1.0, 1.0]  # the closed loop acted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"] == ["Sneaker", "T-shirt", "Trouser"] and summary["splits"]["test"] == 18


def test_cli_trains_on_a_csv_without_test_set(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", CONFIG, "data.name=csv", f"data.train_csv={folder / 'train.csv'}", *GREY,
                 f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=2", "controller.warmup_epochs=0",
                 "train.threads=1", "--out", str(out), "--quiet", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "no test set given: 12 images" in err
    assert json.loads((out / "summary.json").read_text())["splits"]["test"] == 12
    assert main(["eval", str(out), "--json"]) == 0  # the run dir rebuilds the same data from the cache
    assert json.loads(capsys.readouterr().out)["class_names"] == ["Sneaker", "T-shirt", "Trouser"]


def _break_folder(kind: str, root: Path) -> list[str]:
    """Damage a copy of the image folder one way; the overrides that point the config at it."""
    train = root / "train"
    if kind == "no_train":
        shutil.rmtree(train)
    elif kind == "empty_class":
        (train / "Bag").mkdir()
    elif kind in ("text_file", "bad_png"):
        name = "notes.txt" if kind == "text_file" else "broken.png"
        (train / "Trouser" / name).write_text("not an image")
    elif kind == "unknown_test_class":
        shutil.copytree(root / "test" / "Trouser", root / "test" / "Bag")
    elif kind in ("too_few", "carve_too_few"):
        for p in sorted((train / "Trouser").iterdir())[3 if kind == "too_few" else 1:]:
            p.unlink()
        if kind == "carve_too_few":
            shutil.rmtree(root / "test")
    return [f"data.root={root}"]


def _break_csv(kind: str, root: Path) -> list[str]:
    rows = list(csv.reader((root / "train.csv").open()))[1:]
    if kind == "csv_columns":
        _write_csv(root / "train.csv", rows, ("file", "label"))
    elif kind == "csv_missing_file":
        _write_csv(root / "train.csv", [*rows, ("train/Trouser/missing.png", "Trouser")])
    elif kind == "csv_twice":
        _write_csv(root / "train.csv", [*rows, rows[0]])
    elif kind == "csv_in_both":
        _write_csv(root / "test.csv", rows[:2])
    elif kind == "csv_unknown_test_label":
        _write_csv(root / "test.csv", [*rows[:2], ("test/Trouser/x.png", "Bag")])
        shutil.copy(root / rows[0][0], root / "test" / "Trouser" / "x.png")
    return ["data.name=csv", f"data.train_csv={root / 'train.csv'}", f"data.test_csv={root / 'test.csv'}"]


@pytest.mark.parametrize("kind, fragment", [
    ("no_train", "has no train/ folder"),
    ("empty_class", "train/Bag' holds no image"),
    ("text_file", "Trouser/notes.txt' as an image"),
    ("bad_png", "Trouser/broken.png' as an image"),
    ("unknown_test_class", "class 'Bag' is not among the training classes"),
    ("too_few", "class 'Trouser' has 3 training samples, too few for a held-out split"),
    ("csv_columns", "needs the columns path,label in its header row; it has file,label"),
    ("csv_missing_file", "'train/Trouser/missing.png' does not exist"),
    ("csv_unknown_test_label", "label(s) Bag are not among the training classes"),
    ("csv_twice", "is listed twice"),
    ("csv_in_both", "is listed in both"),
    ("carve_too_few", "class 'Trouser' has 1 image, too few to carve a test split of 0.2"),
    ("no_root", "does not exist or is not a folder"),
    ("memory", "more than data.memory_limit_gb"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(kind, fragment, folder, tmp_path, capsys):
    root = _copy(folder, tmp_path)
    if kind == "no_root":
        overrides = [f"data.root={tmp_path / 'nowhere'}"]
    elif kind == "memory":
        overrides = [f"data.root={root}", "data.memory_limit_gb=0.00001"]  # 78 images x 784 B > 10 kB
    else:
        overrides = (_break_csv if kind.startswith("csv") else _break_folder)(kind, root)
    out = tmp_path / "never"
    rc = main(["train", CONFIG, *GREY, f"data.cache_dir={tmp_path / 'cache'}", *overrides, "--out", str(out),
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("adaptive-lb: error: "), err
    assert fragment in err, err
    assert not out.exists()


def test_config_checks_of_the_own_data_keys():
    with pytest.raises(DataError, match="data.name=imagefolder needs data.root=DIR"):
        build_data(load_config(CONFIG).data, 0)  # the shipped config loads; the folder is asked for here
    with pytest.raises(DataError, match="data.name=csv needs data.train_csv"):
        build_data(load_config(CONFIG, ["data.name=csv"]).data, 0)
    with pytest.raises(ConfigError, match="data.channels: '2' is not one of 1, 3"):
        load_config(CONFIG, ["data.root=x", "data.channels=2"])
    with pytest.warns(UserWarning, match="data.image_size: read by data.name=imagefolder and csv only"):
        load_config(ROOT / "configs" / "fashion_mnist.yaml", ["data.image_size=64"])
