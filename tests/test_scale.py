"""The loop at 100-1,000 classes: synthetic data up to 1,000 classes, CIFAR-100 configs, tables and plots that stay
readable, the held-out noise warning, GPU placement of tune workers. (The post-hoc fit: test_posthoc_scale.py.)"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from matplotlib.image import imread
from rich.console import Console

from adaptive_lb import RecallBalancer
from adaptive_lb.cli import main
from adaptive_lb.config import ControllerConfig, SyntheticConfig, load_config
from adaptive_lb.controllers import warn_if_control_is_noisy
from adaptive_lb.data import build_data
from adaptive_lb.data import datasets as ds
from adaptive_lb.errors import ConfigError, ConfigWarning
from adaptive_lb.metrics import Measurement, extreme_classes
from adaptive_lb.progress import PlainProgress, per_class_table, report_table
from adaptive_lb.report import Run, most_confused, write_run_plots
from adaptive_lb.tune import runner
from tests.test_datasets import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- data
def test_synthetic_takes_up_to_1000_classes_drawn_in_chunks(monkeypatch):
    with pytest.raises(ConfigError, match=r"^data.synthetic.num_classes: 1001 is out of range, it must be <= 1000$"):
        SyntheticConfig(num_classes=1001)
    cfg = SyntheticConfig(num_classes=12, per_class=20, image_size=8)
    monkeypatch.setattr(ds, "SYNTHETIC_CHUNK", 5 * 20 * 64)  # five classes per draw: three chunks
    a, b = ds.make_synthetic(cfg, 0), ds.make_synthetic(cfg, 0)
    assert a.x_train.shape == (240, 1, 8, 8) and a.x_train.dtype == torch.uint8 and len(a.class_names) == 12
    assert torch.equal(a.x_train, b.x_train) and torch.bincount(a.y_test).tolist() == [6] * 12
    spread = [a.x_train[a.y_train == c].float().std(dim=0).mean().item() for c in (0, 11)]
    assert spread[0] < spread[1], "later classes stay noisier across chunks"


def test_cifar100_configs_load_and_split_on_cifar_format_files(tmp_path):
    write_fake_cifar(tmp_path, "cifar100", n_per_file=1000)  # 10 training images per class
    for name, long_tail in (("cifar100_resnet32.yaml", "none"), ("cifar100_lt100.yaml", "exp")):
        cfg = load_config(ROOT / "configs" / name, [f"data.root={tmp_path}"])
        assert (cfg.data.name, cfg.data.long_tail, cfg.model.name) == ("cifar100", long_tail, "resnet32")
    data = build_data(cfg.data, 0)  # cifar100_lt100: 2 held-out per class (0.2 of 10), 1 control + 1 select
    assert data.num_classes == 100 and len(data.heldout) == len(data.select) == 100
    counts = torch.bincount(data.train.y, minlength=100)
    assert int(counts[0]) == 8 and int(counts[-1]) == 1, "n_c = 8 * 100^(-c/99), at least 1"


# ---------------------------------------------------------------------------------------------- noise warning
def measured(tpr: list[float], counts: list[int]) -> Measurement:
    return Measurement.from_tpr(torch.tensor(tpr, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64))


def test_noise_warning_names_the_class_the_numbers_and_the_fix():
    damped = ControllerConfig(name="damped", gap_scale=0.05)
    # standard errors sqrt(p(1-p)/n): 0.0150, 0.0917, 0.0849, 0.0490 -> b, c and d are above 0.025, b the most
    m = measured([0.9, 0.7, 0.6, 0.5], [400, 25, 30, 100])
    with pytest.warns(ConfigWarning) as seen:
        assert warn_if_control_is_noisy(damped, m, ["a", "b", "c", "d"])
    assert [str(w.message) for w in seen] == [
        "class 'b' (and 2 more) has 25 control (held-out) images at TPR 0.700: its standard error sqrt(p(1-p)/n) = "
        "0.0917 is above controller.gap_scale/2 = 0.0250, so the loop would chase noise; raise data.heldout_fraction "
        "(it needs 336 control images at this TPR) or controller.gap_scale (to at least 0.1833)"]
    # just above the bound (224 of 300 images, the shipped FM split): the digits show by how much
    with pytest.warns(ConfigWarning, match=r"TPR 0\.747: .* = 0\.0251 is above controller\.gap_scale/2 = 0\.0250.*"
                      r"needs 303 control images"):
        warn_if_control_is_noisy(damped, measured([224 / 300, 0.97], [300, 300]), "ab")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the shipped Fashion-MNIST default: 300 control images per class, Shirt at ~0.78 once the loop acts
        assert not warn_if_control_is_noisy(damped, measured([0.78, 0.97, 0.92], [300] * 3), "abc")
        assert not warn_if_control_is_noisy(ControllerConfig(name="damped", gap_scale=0.2), m, "abcd")
        assert not warn_if_control_is_noisy(ControllerConfig(name="static"), m, "abcd")  # reads no gap_scale
    with pytest.warns(ConfigWarning, match="at TPR 0.550"):  # the same split early on, Shirt at 0.55: noisy
        warn_if_control_is_noisy(damped, measured([0.55, 0.97, 0.92], [300] * 3), "abc")


def test_balancer_checks_the_noise_once_when_the_loop_starts_acting():
    balancer = RecallBalancer(3, "damped", warmup_epochs=2, gap_scale=0.05)
    noisy = measured([0.5, 0.9, 0.9], [20, 20, 20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer.update(noisy)  # warm-up: the loop does not act, nothing to chase yet
        balancer.update(noisy)
    with pytest.warns(ConfigWarning, match=r"^class '0' \(and 2 more\) has 20 control"):
        balancer.update(noisy)  # first acting step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer.update(noisy)  # once per run, not once per epoch


# ---------------------------------------------------------------------------------------------- tables
def block(tpr: list[float]) -> dict:
    """A split's metrics block around per-class TPR."""
    worst = min(range(len(tpr)), key=tpr.__getitem__)
    return {"tpr": tpr, "accuracy": 0.5, "balanced_accuracy": sum(tpr) / len(tpr), "tpr_std": 0.2,
            "worst_class": f"class_{worst}", "worst_tpr": tpr[worst], "support": [10] * len(tpr),
            "precision": [0.5] * len(tpr), "f1": [0.5] * len(tpr)}


def record(num: int) -> dict:
    """An epoch record of ``num`` classes whose held-out TPR rises with the class index (class_0 lowest)."""
    tpr = [0.2 + 0.7 * c / (num - 1) for c in range(num)]
    return {"heldout": block(tpr), "test": block(tpr[::-1]), "class_weights": [1.0] * num,
            "aug_intensity": [0.0] * num, "logit_margin": [0.0] * num}


def render(table) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(table)
    return buf.getvalue()


def test_extreme_classes_rank_by_value_then_index():
    assert extreme_classes([0.5] * 20, 10) is None and extreme_classes([0.1, 0.2, 0.3], 0) is None
    assert extreme_classes([0.5, 0.1, 0.5, 0.9, 0.1, 0.5, 0.3], 2) == [1, 4, 0, 3]  # ties: lower index first


def test_tables_show_the_lowest_and_highest_k_and_a_summary_line():
    names = [f"class_{c}" for c in range(50)]
    text = render(per_class_table(names, record(50), "epoch 3", top_k=3))
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 3]
    assert rows == ["class_0", "class_1", "class_2", "⋯ 44 more classes", "class_47", "class_48", "class_49"]
    assert "50 classes, held-out TPR: mean 0.550, median 0.550, std 0.206, min 0.200, max 0.900; the 3" in text
    text = render(report_table(record(50)["test"], names, "eval", top_k=2))
    assert text.index("class_49") < text.index("class_48") < text.index("⋯ 46 more") < text.index("class_0")
    small = render(per_class_table(names[:20], record(20)))  # 20 classes, top_k 10: every class, as before
    assert "more classes" not in small and all(n in small for n in names[:20])


def test_plain_final_lines_at_many_classes():
    names = [f"class_{c}" for c in range(30)]
    rec = record(30)
    summary = {"class_names": names, "heldout": rec["heldout"], "test": rec["test"],
               "posthoc": {"method": "equalise", "fitted_on": "select", "bias": [0.1 * c - 1 for c in range(30)]}}
    buf = io.StringIO()
    PlainProgress(buf, top_k=2).on_fit_end(SimpleNamespace(last_record=rec), summary)
    lines = buf.getvalue().splitlines()
    assert [line.split()[0] for line in lines[1:6]] == ["class_0", "class_1", "⋯", "class_28", "class_29"]
    assert lines[6].startswith("30 classes, held-out TPR: mean")
    assert lines[7] == "post-hoc equalise (fitted on select): biases from -1.00 to +1.90 over 30 classes " \
                       "(all in summary.json)"


# ---------------------------------------------------------------------------------------------- plots
def test_most_confused_pairs_come_first():
    rates = torch.eye(5).numpy()
    rates[3, 1], rates[1, 3], rates[4, 0], rates[2, 4] = 0.4, 0.3, 0.2, 0.2
    assert most_confused(rates, 1) == [3, 1]
    assert most_confused(rates, 3) == [3, 1, 2, 4]  # (3,1) 0.4, (1,3) 0.3, then (2,4) before (4,0): flat order


def test_plots_at_60_classes_stay_small_and_readable(tmp_path):
    num = 60
    names = [f"class_{c}" for c in range(num)]
    cm = (torch.eye(num, dtype=torch.int64) * 8 + torch.roll(torch.eye(num, dtype=torch.int64), 1, 1) * 2).tolist()
    metrics = [{**record(num), "epoch": e} for e in (1, 2, 3)]
    run = Run(tmp_path / "run", {}, {"class_names": names, "heldout": record(num)["heldout"],
                                     "test": record(num)["test"], "confusion": {"test": cm}}, metrics)
    for path in write_run_plots(run, tmp_path / "plots"):
        h, w = imread(path).shape[:2]
        assert 300 < w < 2000 and 250 < h < 1500, (path.name, w, h)  # a 60 x 60 matrix would be ~3,900 px wide


# ---------------------------------------------------------------------------------------------- tune on GPUs
@pytest.mark.parametrize("workers, gpus, env, expected", [
    (4, 2, {}, ["0", "1", "0", "1"]),
    (3, 2, {"CUDA_VISIBLE_DEVICES": "3,5"}, ["3", "5", "3"]),
    (2, 4, {"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}, ["GPU-aa", "GPU-bb"]),
    (2, 1, {}, ["0", "0"]),
])
def test_workers_are_placed_round_robin_on_the_visible_gpus(workers, gpus, env, expected):
    placed = runner.gpu_placement(workers, "auto", gpus, env)
    assert placed == [{"CUDA_VISIBLE_DEVICES": d} for d in expected]


@pytest.mark.parametrize("device, gpus", [("auto", 0), ("cpu", 2), ("cuda:1", 2)])
def test_no_gpu_or_a_pinned_device_leaves_the_environment_alone(device, gpus):
    assert runner.gpu_placement(3, device, gpus, {"CUDA_VISIBLE_DEVICES": "0,1"}) == [{}, {}, {}]


def test_a_worker_process_sets_its_gpu_before_training(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # restored after the test, as are stdout and stderr
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(runner, "work", lambda w, view: seen.append(runner.os.environ["CUDA_VISIBLE_DEVICES"]))
    worker = runner.Worker(None, "s", "journal:x", tmp_path, 1, 1, 2, None, {"CUDA_VISIBLE_DEVICES": "1"})
    runner._child(worker, str(tmp_path / "worker-1.log"))
    assert seen == ["1"]


# ---------------------------------------------------------------------------------------------- CLI
def test_train_with_top_k(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(ROOT / "configs" / "synthetic.yaml"), "data.synthetic.num_classes=24",
                 "data.synthetic.per_class=20", "data.synthetic.image_size=8", "data.heldout_fraction=0.2",
                 "model.width=4", "train.epochs=1", "train.device=cpu", "train.threads=1", "--quiet",
                 "--top-k", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "⋯ 18 more classes" in text and "24 classes, held-out TPR" in text
    assert (out / "plots" / "confusion.png").is_file()
