"""The examples run as users run them (subprocess, ``--quick``, a real Fashion-MNIST subset)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, cli_env


def run_example(name, *args):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick", *args], cwd=ROOT, env=cli_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()


@pytest.mark.slow
def test_own_loop_trains_steps_and_calibrates(fmnist_available):
    lines = run_example("own_loop.py")
    assert [line.split(":")[0] for line in lines[:-1]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "weight now 1.00" in lines[0] and "weight now 1.00" not in lines[-2]  # warm-up, then the loop acts
    result = json.loads(lines[-1])
    assert result["method"] == "balancer" and len(result["select_recall"]) == 10
    assert result["test_accuracy"] > 0.6  # 1,600 training images, 3 epochs: well above chance (0.1)


@pytest.mark.slow
def test_lightning_example_steps_once_per_epoch(fmnist_available):
    pytest.importorskip("lightning")
    stats = json.loads(run_example("lightning_module.py")[-1])
    assert stats["steps"] == 2 and stats["recall_worst"] < stats["recall_mean"]
    weights = [v for k, v in stats.items() if k.startswith("weight/")]
    assert len(weights) == 10 and max(weights) > 1.0 > min(weights)
