"""How much an EMA of the weights cuts the epoch-to-epoch held-out TPR swing of the hard classes, and its cost.

One ERM run per seed (configs/fashion_mnist_erm.yaml: full balanced Fashion-MNIST, small CNN, 10 epochs, one
thread) with ``train.ema_decay=--decay``: its records hold the EMA model's numbers and, under ``raw``, the
live model's, which are exactly those of a ``train.ema_decay=0`` run (under a static controller the EMA feeds
nothing back into training; ``--check-off`` runs one such seed and compares). ``--extra`` decays are averaged
alongside by a callback (their own ``ModelEma``, evaluated on held-out every epoch, test at the end), so one
training run per seed measures several decays. Finished run dirs (``summary.json``) are skipped.

    .venv/bin/python bench/ema_swing.py --seeds 0 1 2        # ~8 min per seed on one thread

Writes ``bench/results/ema_swing.{md,json}``; run dirs go to ``bench/out/ema_swing/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_lb.callbacks import Callback
from adaptive_lb.config_io import load_config
from adaptive_lb.data import build_data
from adaptive_lb.ema import ModelEma
from adaptive_lb.metrics import summarize
from adaptive_lb.rundir import RunDir, RunDirWriter
from adaptive_lb.trainer import SUMMARY_KEYS, Trainer

ROOT = Path(__file__).resolve().parents[1]
HARD = ("Shirt", "Pullover", "Coat", "T-shirt/top")
LAST = 6  # epoch-to-epoch differences over the last LAST epochs (LAST + 1 held-out readings)
EXTRA, EXTRA_STATE = "extra_ema.jsonl", "extra_ema.pt"


class ExtraEmas(Callback):
    """Averages the live model at more decays and writes their held-out (and final test) metrics per epoch."""

    def __init__(self, run: RunDir, decays: list[float]) -> None:
        self.run, self.decays, self.emas = run, decays, []

    def on_fit_start(self, trainer: Any) -> None:
        self.emas = [ModelEma(trainer.model, d, trainer.cfg.train.ema_warmup) for d in self.decays]
        if trainer.epoch:  # resumed: the extras' state must be of the same epoch as the checkpoint
            state = torch.load(self.run.path / EXTRA_STATE, weights_only=True)
            if state["epoch"] != trainer.epoch:
                raise SystemExit(f"{self.run.path}: extra EMAs at epoch {state['epoch']}, checkpoint at "
                                 f"{trainer.epoch}: delete the run dir and run again")
            for ema, s in zip(self.emas, state["emas"], strict=True):
                ema.load_state_dict(s)
        self.t_update = 0.0

    def on_train_batch_end(self, trainer: Any, batch: int, images: int) -> None:
        t = time.perf_counter()
        for ema in self.emas:
            ema.update(trainer.model)
        self.t_update += time.perf_counter() - t

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        names, out = trainer.data.class_names, {}
        for d, ema in zip(self.decays, self.emas, strict=True):
            out[str(d)] = {split: {k: v for k, v in summarize(trainer.confusion(split, model=ema.module), names,
                                                               split).items() if k in SUMMARY_KEYS}
                           for split in ("heldout", "test") if split == "heldout" or record["test"] is not None}
        line = {"epoch": record["epoch"], "decays": out, "extra_update_s": self.t_update}
        self.t_update = 0.0
        with open(self.run.path / EXTRA, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        torch.save({"epoch": record["epoch"], "emas": [e.state_dict() for e in self.emas]},
                   self.run.path / EXTRA_STATE)


class PrintEpoch(Callback):
    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        raw = (record.get("raw") or {}).get("heldout") or {"accuracy": float("nan")}
        print(f"{time.strftime('%H:%M:%S')} seed {trainer.cfg.train.seed} ema_decay {trainer.cfg.train.ema_decay} "
              f"epoch {record['epoch']}: held-out acc {record['heldout']['accuracy']:.4f} (raw {raw['accuracy']:.4f})"
              f", {sum(record['time_s'].values()):.1f}s", flush=True)


def train_seed(out: Path, seed: int, decay: float, extra: list[float], overrides: list[str]) -> None:
    """One ERM run (resumed when its dir has a checkpoint, skipped when it has a summary)."""
    path = out / (f"seed{seed}" if decay else f"off_seed{seed}")
    cfg = load_config(ROOT / "configs" / "fashion_mnist_erm.yaml",
                      [*overrides, f"train.seed={seed}", "train.threads=1", f"train.ema_decay={decay}"])
    if (path / "summary.json").is_file():
        return
    resume = (path / "checkpoint.pt").is_file()
    run = RunDir.open(path) if resume else RunDir.create(path, cfg)
    callbacks: list[Callback] = [RunDirWriter(run), PrintEpoch()] + ([ExtraEmas(run, extra)] if decay else [])
    trainer = Trainer(cfg, build_data(cfg.data, seed), callbacks)
    if resume:
        state = run.load_checkpoint()
        run.trim_metrics(state["epoch"])
        trainer.load_state_dict(state)
    trainer.fit()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def swing(heldouts: list[dict], hard: list[int]) -> float:
    """Mean |TPR_e - TPR_(e-1)| over the hard classes and the last LAST epoch-to-epoch steps."""
    tail = [h["tpr"] for h in heldouts[-(LAST + 1):]]  # (LAST+1, C)
    steps = [abs(b[c] - a[c]) for a, b in itertools.pairwise(tail) for c in hard]
    return statistics.fmean(steps)


def seed_settings(path: Path, decay: float) -> dict[str, dict]:
    """setting -> (per-epoch held-out blocks, final test block) of one seed's run dir."""
    records = read_lines(path / "metrics.jsonl")
    out = {"off": {"heldout": [r["raw"]["heldout"] for r in records], "test": records[-1]["raw"]["test"]},
           str(decay): {"heldout": [r["heldout"] for r in records], "test": records[-1]["test"]}}
    extra = read_lines(path / EXTRA)[: len(records)]
    for d in extra[-1]["decays"] if extra else []:
        out[d] = {"heldout": [e["decays"][d]["heldout"] for e in extra], "test": extra[-1]["decays"][d]["test"]}
    return out


def overhead(path: Path) -> dict[str, float]:
    """Shares of the epoch: EMA updates, EMA + held-out eval + control, the live model's (reporting) evaluation.

    The denominator is the epoch without the bench's extra EMAs and without the live model's evaluation (what
    an epoch costs when nothing but the EMA model is evaluated), so the shares are upper bounds.
    """
    times = [r["time_s"] for r in read_lines(path / "metrics.jsonl")]
    extra = sum(e["extra_update_s"] for e in read_lines(path / EXTRA)[: len(times)])
    tot = {k: sum(t[k] for t in times) for k in times[0]}
    epoch = sum(tot.values()) - extra - tot["raw_eval"]
    return {"epoch_s": epoch / len(times), "ema": tot["ema"] / epoch,
            "loop": (tot["ema"] + tot["heldout_eval"] + tot["control"]) / epoch, "raw_eval": tot["raw_eval"] / epoch}


METRICS = (("swing", "hard-class held-out TPR swing"), ("heldout_accuracy", "held-out acc"),
           ("heldout_worst_tpr", "held-out worst TPR"), ("heldout_tpr_std", "held-out TPR std"),
           ("test_accuracy", "test acc"), ("test_tpr_std", "test TPR std"), ("test_worst_tpr", "test worst TPR"))


def setting_numbers(s: dict, hard: list[int], shirt: int) -> dict[str, float]:
    last, test = s["heldout"][-1], s["test"]
    return {"swing": swing(s["heldout"], hard), "shirt_swing": swing(s["heldout"], [shirt]),
            "heldout_accuracy": last["accuracy"], "heldout_worst_tpr": last["worst_tpr"],
            "heldout_tpr_std": last["tpr_std"], "test_accuracy": test["accuracy"], "test_tpr_std": test["tpr_std"],
            "test_worst_tpr": test["worst_tpr"]}


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def off_check(out: Path, seed: int) -> bool | None:
    """Whether a train.ema_decay=0 run's held-out blocks equal the EMA run's raw blocks (None: not run)."""
    off, ema = out / f"off_seed{seed}", out / f"seed{seed}"
    if not (off / "summary.json").is_file() or not (ema / "summary.json").is_file():
        return None
    return [r["heldout"] for r in read_lines(off / "metrics.jsonl")] == \
        [r["raw"]["heldout"] for r in read_lines(ema / "metrics.jsonl")]


def report(out: Path, seeds: list[int], decay: float, dest: Path, command: str, wall_s: float) -> None:
    done = [s for s in seeds if (out / f"seed{s}" / "summary.json").is_file()]
    names = json.loads((out / f"seed{done[0]}" / "summary.json").read_text())["class_names"]
    hard, shirt = [names.index(n) for n in HARD], names.index("Shirt")
    per_seed = {s: {k: setting_numbers(v, hard, shirt) for k, v in seed_settings(out / f"seed{s}", decay).items()}
                for s in done}
    settings = sorted(per_seed[done[0]], key=lambda k: 0.0 if k == "off" else float(k))
    table = {k: {m: mean_std([per_seed[s][k][m] for s in done]) for m in (*dict(METRICS), "shirt_swing")}
             for k in settings}
    over = {s: overhead(out / f"seed{s}") for s in done}
    over_mean = {k: mean_std([o[k] for o in over.values()]) for k in over[done[0]]}
    result = {"command": command, "seeds": done, "decay_trained": decay, "hard_classes": HARD, "last_epochs": LAST,
              "table": table, "per_seed": per_seed, "overhead": over, "overhead_mean": over_mean,
              "off_run_equals_raw_block": off_check(out, done[0]), "wall_s_this_invocation": wall_s}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps(result, indent=2))
    fmt = lambda v: f"{v['mean']:.4f} ± {v['std']:.4f}"  # noqa: E731
    lines = [f"# EMA of the weights: held-out TPR swing and accuracy (seeds {', '.join(map(str, done))})", "",
             f"Command: `{command}`  ", "configs/fashion_mnist_erm.yaml, one torch thread per run. Swing = mean "
             f"|Δ| of held-out TPR between consecutive epochs over the last {LAST} epochs, over "
             f"{', '.join(HARD)}. `off` = the live model (the `raw` block; equals a train.ema_decay=0 run: "
             f"{result['off_run_equals_raw_block']}). Test columns are reported only, never used for a choice.", "",
             "| ema_decay | " + " | ".join(label for _, label in METRICS) + " | Shirt swing |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    for k in settings:
        lines.append(f"| {k} | " + " | ".join(fmt(table[k][m]) for m, _ in METRICS)
                     + f" | {fmt(table[k]['shirt_swing'])} |")
    om = {k: v["mean"] for k, v in over_mean.items()}
    lines += ["", f"Cost with train.ema_decay={decay} (share of an epoch without the live model's evaluation, mean "
              f"over seeds; epoch {om['epoch_s']:.1f} s): EMA updates {100 * om['ema']:.2f} %, "
              f"EMA updates + held-out evaluation + controller {100 * om['loop']:.2f} %, "
              f"on top: the live model's held-out and test evaluation (reporting only) "
              f"{100 * om['raw_eval']:.2f} %."]
    dest.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(dest.with_suffix(".md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--decay", type=float, default=0.995, help="train.ema_decay of the runs")
    ap.add_argument("--extra", type=float, nargs="*", default=[0.99, 0.998], help="decays averaged alongside")
    ap.add_argument("--check-off", action="store_true", help="also run train.ema_decay=0 for the first seed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "ema_swing"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "ema_swing"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides (smoke tests: train.epochs=2 ...)")
    args = ap.parse_args()
    out, start = Path(args.out), time.perf_counter()
    if not args.report_only:
        for seed in args.seeds:
            train_seed(out, seed, args.decay, args.extra, args.overrides)
        if args.check_off:
            train_seed(out, args.seeds[0], 0.0, [], args.overrides)
    command = "python bench/ema_swing.py --seeds " + " ".join(map(str, args.seeds)) + f" --decay {args.decay}" \
        + " --extra " + " ".join(map(str, args.extra)) + (" --check-off" if args.check_off else "") \
        + "".join(f" {o}" for o in args.overrides)
    report(out, args.seeds, args.decay, Path(args.results), command, time.perf_counter() - start)


if __name__ == "__main__":
    main()
