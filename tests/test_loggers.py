"""``train.loggers: [tensorboard]``: event files in the run dir with per-class tags, read back with TensorBoard."""

import json
import sys

import pytest
from conftest import ROOT

from adaptive_lb.cli import main
from adaptive_lb.config import TrainConfig
from adaptive_lb.errors import ConfigError

SYNTH = str(ROOT / "configs" / "synthetic.yaml")
RUN = ["train.epochs=2", "controller.name=damped", "controller.warmup_epochs=0", "controller.margin_gain=0.5",
       "controller.aug_gain=1.0", "--quiet", "--no-plots"]


def scalars(folder):
    """``{tag: [(step, value), ...]}`` of every scalar in the event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_per_class_tpr_and_the_action_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert main(["train", SYNTH, *RUN, "train.loggers=[tensorboard]", "--out", str(out)]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    tags = scalars(out / "tensorboard")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    names = json.loads((out / "summary.json").read_text())["class_names"]
    for c, name in enumerate(names):
        tag = name.replace(" ", "_")
        for prefix, key in (("heldout_tpr", None), ("test_tpr", None), ("select_tpr", None),
                            ("weight", "class_weights"), ("aug", "aug_intensity"), ("offset", "logit_margin")):
            expected = [(r["epoch"], r[key][c] if key else r[prefix[:-4]]["tpr"][c]) for r in records]
            got = tags[f"{prefix}/{tag}"]
            assert [s for s, _ in got] == [1, 2]
            assert [v for _, v in got] == pytest.approx([v for _, v in expected], abs=1e-6)
    assert tags["heldout/worst_tpr"][-1][1] == pytest.approx(records[-1]["heldout"]["worst_tpr"], abs=1e-6)
    assert {"train/loss", "train/lr", "test/accuracy"} <= set(tags)
    assert any(v != 1.0 for _, v in tags[f"weight/{names[-1].replace(' ', '_')}"]), "the loop acted"


def test_loggers_are_validated():
    assert TrainConfig().loggers == ()
    with pytest.raises(ConfigError, match=r"train.loggers: \['wandb'\] is not a list of distinct loggers"):
        TrainConfig(loggers=("wandb",))


def test_missing_tensorboard_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "run"
    assert main(["train", SYNTH, *RUN, "train.loggers=[tensorboard]", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install adaptive_lb[tensorboard]" in err, err
    assert not out.exists()
