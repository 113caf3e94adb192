"""The benchmark suites name configs and overrides that load: a typo there costs hours of training, not seconds."""

import sys
from pathlib import Path

import pytest

from adaptive_lb.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import frontier  # noqa: E402  (bench/ is a folder of scripts, not a package)

CASES = [(suite, method, value) for suite, methods in frontier.SUITES.items()
         for method, (_, values) in methods.items() for value in values]


@pytest.mark.parametrize(("suite", "method", "value"), CASES)
def test_every_frontier_point_loads_its_config(suite, method, value):
    files, values = frontier.SUITES[suite][method]
    cfg = load_config([ROOT / f for f in files], values[value])
    assert cfg.train.epochs > 0


def test_loop_ldam_runs_the_loop_on_ldam_and_defers_it_in_d2():
    files, values = frontier.SUITES["fashion_mnist_lt100"]["loop_ldam"]
    s2, d2 = (load_config([ROOT / f for f in files], values[v]) for v in ("s2", "d2"))
    assert (s2.loss.name, s2.loss.max_m, s2.model.head, s2.controller.name) == ("ldam", 0.25, "cosine", "damped")
    assert s2.controller.exponent == 2 and s2.controller.margin_gain == pytest.approx(0.01)
    # d2 differs from s2 only in when the controller starts: DRW's epoch, 80 % of 20
    assert d2.controller.warmup_epochs == 16 == 0.8 * d2.train.epochs
    assert s2.controller.warmup_epochs == 3
