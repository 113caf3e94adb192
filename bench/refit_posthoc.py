"""Refit the post-hoc step of finished runs from their final checkpoints, with the current code.

For when the fitting algorithm changes after the models were trained: the model is the run's own final
checkpoint (unchanged), only the biases and the ``posthoc`` block of ``summary.json`` are recomputed. Keys of
the run's ``posthoc`` config section that no longer exist are dropped from ``config.yaml`` (the current
defaults apply) and listed in the output, so the run dir stays loadable and says what was used.

    .venv/bin/python bench/refit_posthoc.py runs/bench_fashion_mnist_lt100/posthoc_equalise/seed*
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml

from adaptive_lb.config import PosthocConfig, RunConfig
from adaptive_lb.config_io import dump_config, from_dict
from adaptive_lb.data import build_data
from adaptive_lb.rundir import RunDir
from adaptive_lb.trainer import Trainer


def refit(path: Path) -> dict:
    """Recompute ``summary.json``'s posthoc block of run dir ``path``; return it."""
    raw = yaml.safe_load((path / "config.yaml").read_text())
    known = {f.name for f in dataclasses.fields(PosthocConfig)}
    dropped = sorted(set(raw.get("posthoc", {})) - known)
    raw["posthoc"] = {k: v for k, v in raw.get("posthoc", {}).items() if k in known}
    cfg = from_dict(RunConfig, raw)
    trainer = Trainer(cfg, build_data(cfg.data, cfg.train.seed))
    trainer.load_state_dict(RunDir(path).load_checkpoint())
    summary = json.loads((path / "summary.json").read_text())
    summary["posthoc"] = trainer.posthoc()
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    (path / "config.yaml").write_text(dump_config(cfg))
    print(f"{path}: dropped posthoc keys {dropped or 'none'}; test {summary['posthoc']['test']['accuracy']:.4f} "
          f"acc, TPR std {summary['posthoc']['test']['tpr_std']:.4f}", flush=True)
    return summary["posthoc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    for path in ap.parse_args().run_dirs:
        refit(path)


if __name__ == "__main__":
    main()
