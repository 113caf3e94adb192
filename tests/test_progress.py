import io

from rich.console import Console

from adaptive_lb.data import build_data
from adaptive_lb.progress import PlainProgress, RichProgress, create_progress
from adaptive_lb.trainer import Trainer


def test_rich_live_display_shows_bars_and_per_class_table(make_config):
    cfg = make_config(train={"epochs": 3}, controller={"name": "damped", "warmup_epochs": 0, "margin_gain": 0.5,
                                                       "aug_gain": 1.0})
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=140, color_system=None)
    Trainer(cfg, build_data(cfg.data, 0), [RichProgress(console)]).fit()
    text = buf.getvalue()
    for needle in ("epoch 3/3", "img/s", "held-out TPR", "test TPR", "weight", "aug", "offset", "class_3",
                   "final metrics", "balanced accuracy", "worst-class TPR"):
        assert needle in text, needle


def test_plain_lines_when_piped_or_quiet(make_config):
    buf = io.StringIO()  # not a terminal
    assert isinstance(create_progress(False, buf), PlainProgress)
    cfg = make_config(train={"epochs": 2})
    Trainer(cfg, build_data(cfg.data, 0), [create_progress(True, buf)]).fit()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("training small_cnn on synthetic")
    assert lines[1].startswith("epoch 1/2 loss") and "held-out acc" in lines[1] and "img/s" in lines[1]
    assert lines[-1].startswith("final test")
    assert "weight   aug  offset" in buf.getvalue()  # the actuators of the last epoch, per class


def test_two_pass_counts_both_passes(make_config):
    buf = io.StringIO()
    cfg = make_config(train={"epochs": 1}, controller={"name": "two_pass"})
    Trainer(cfg, build_data(cfg.data, 0), [create_progress(True, buf)]).fit()
    assert "epoch 2/2 loss" in buf.getvalue()
