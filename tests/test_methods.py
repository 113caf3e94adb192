"""Every method is a config name: each overlay of configs/methods/ loads on every dataset config and trains."""

import json
import math
from pathlib import Path

import pytest

from adaptive_lb.cli import main
from adaptive_lb.config import load_config
from adaptive_lb.data import build_data
from adaptive_lb.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted((ROOT / "configs" / "methods").glob("*.yaml"))
DATASETS = ["fashion_mnist.yaml", "fashion_mnist_lt10.yaml", "fashion_mnist_lt100.yaml", "cifar10_lt100.yaml",
            "cifar100_lt100.yaml"]
QUICK_LT = ["data.name=synthetic", "data.synthetic.num_classes=4", "data.synthetic.per_class=120",
            "data.synthetic.image_size=12", "data.heldout_fraction=0.2", "data.long_tail=exp",
            "data.imbalance_ratio=10", "model.width=4", "train.epochs=3", "train.batch_size=32",
            "train.device=cpu", "train.threads=1", "controller.warmup_epochs=0"]


def test_every_method_named_in_the_docs_has_an_overlay():
    names = {p.stem for p in METHODS}
    assert names >= {"erm", "inverse_freq", "inverse_sqrt", "effective_number", "oversample", "undersample",
                     "oversample_aug", "focal", "ldam_drw", "logit_adjusted", "balanced_softmax",
                     "posthoc_equalise", "posthoc_logit_adjust", "closed_loop", "closed_loop_la", "closed_loop_ldam"}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_overlay_loads_on_every_dataset_config(dataset, method):
    base = load_config(ROOT / "configs" / dataset)
    cfg = load_config([ROOT / "configs" / dataset, method])
    assert cfg.data == base.data.__class__(**{**base.data.__dict__, "sampler": cfg.data.sampler,
                                              "copy_aug": cfg.data.copy_aug}), "an overlay keeps the dataset"
    assert cfg.train.epochs == base.train.epochs


def test_long_tailed_configs_have_the_stated_profile():
    lt100 = load_config(ROOT / "configs" / "fashion_mnist_lt100.yaml")
    lt10 = load_config(ROOT / "configs" / "fashion_mnist_lt10.yaml")
    cifar = load_config(ROOT / "configs" / "cifar10_lt100.yaml")
    assert (lt100.data.long_tail, lt100.data.imbalance_ratio, lt10.data.imbalance_ratio) == ("exp", 100.0, 10.0)
    assert (cifar.data.name, cifar.data.long_tail, cifar.data.imbalance_ratio) == ("cifar10", "exp", 100.0)
    assert lt100.data.heldout_balanced and lt100.controller.name == "static"


@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_every_method_trains_on_long_tailed_data(method):
    cfg = load_config([ROOT / "configs" / "fashion_mnist_lt100.yaml", method], [*QUICK_LT, "train.epochs=8"])
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    summary = trainer.fit()
    block = summary.get("posthoc", summary)["test"]
    assert all(math.isfinite(v) for v in block["tpr"]) and block["balanced_accuracy"] > 0.3
    assert ("posthoc" in summary) == (cfg.posthoc.method != "none")
    counts = trainer.train_counts.tolist()
    assert counts[0] > counts[-1] and max(counts) / min(counts) == pytest.approx(10, rel=0.15)


def test_cli_merges_configs_and_eval_applies_the_posthoc_biases(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(ROOT / "configs" / "fashion_mnist_lt100.yaml"),
            str(ROOT / "configs" / "methods" / "posthoc_equalise.yaml"), *QUICK_LT, "--quiet", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "post-hoc equalise (fitted on select): biases" in text and "test, post-hoc equalise" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posthoc"]["method"] == "equalise" and len(summary["posthoc"]["bias"]) == 4
    for flags, block in ((["--split", "heldout"], summary["posthoc"]["heldout"]), (["--raw"], summary["test"])):
        assert main(["eval", str(out), *flags]) == 0
        shown = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal width
        assert ("post-hoc equalise biases" in shown) == (flags != ["--raw"])
        assert f"acc {block['accuracy']:.4f} bal {block['balanced_accuracy']:.4f}" in shown
