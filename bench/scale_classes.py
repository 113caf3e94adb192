"""The loop at 10, 100 and 1,000 classes: what each part of an epoch costs as the number of classes C grows.

For each C, synthetic 28x28 images (``data.synthetic``) with the same total size (``--images`` train + held-out,
split evenly over the classes, so the training epoch costs the same at every C), the small CNN of
``configs/fashion_mnist.yaml``, EMA on and the closed loop with every C x C actuator on (pairwise margins,
confused-pair mixup), so the controller update is at its most expensive. Two epochs; the second is measured
(the first warms the allocator). Parts, from the epoch record's ``time_s`` and timed around the calls:

- training epoch; control-split evaluation; controller update (``RecallBalancer.step``); select evaluation;
- calibration fit (``equalising_biases``) on the run's select logits, and on ``--fit-n`` random logits of C
  classes (the issue's yardstick: C = 1,000, N = 50,000, <= 10 s on 2 cores);
- reporting: the live per-class table (``--top-k``) rendered to text, and the three run plots written;
- memory: bytes of the controller's state and of one confusion matrix (both O(C^2)).

    .venv/bin/python bench/scale_classes.py             # writes bench/results/scale_classes_cpu.{md,json}
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from adaptive_lb.config_io import load_config
from adaptive_lb.data import build_data
from adaptive_lb.metrics import TOP_K
from adaptive_lb.posthoc import equalising_biases
from adaptive_lb.progress import per_class_table
from adaptive_lb.report import load_run, write_run_plots
from adaptive_lb.rundir import RunDir, RunDirWriter
from adaptive_lb.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
LOOP = ["controller.name=damped", "controller.warmup_epochs=0", "controller.margin_gain=0.15",
        "controller.pair_gain=5", "controller.mix_gain=0.1"]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_size(classes: int, images: int, threads: int, fit_n: int) -> dict:
    """Train two epochs at ``classes`` classes and time every part of the second; see the module docstring."""
    per_class = images // classes
    cfg = load_config([ROOT / "configs" / "synthetic.yaml"], [
        f"data.synthetic.num_classes={classes}", f"data.synthetic.per_class={per_class}",
        "data.synthetic.image_size=28", "data.heldout_fraction=0.1", "data.select_fraction=0.5",
        "model.width=24", "train.batch_size=256", "train.epochs=2", "train.ema_decay=0.995", "train.raw_every=0",
        "train.test_every=0", f"train.threads={threads}", "train.log_every=50", *LOOP])
    data = build_data(cfg.data, 0)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "run", cfg)
        trainer = Trainer(cfg, data, [RunDirWriter(run)])
        trainer.fit()
        rec = trainer.last_record
        z, y = trainer.logits("select")
        fit_s, _ = timed(lambda: equalising_biases(z, y, cfg.posthoc.sweeps, cfg.posthoc.spread_weight))
        gen = torch.Generator().manual_seed(0)
        big_y = torch.randint(0, classes, (fit_n,), generator=gen)
        big_z = torch.randn(fit_n, classes, generator=gen) + 3 * torch.nn.functional.one_hot(big_y, classes)
        big_fit_s, _ = timed(lambda: equalising_biases(big_z, big_y, cfg.posthoc.sweeps, 1.0))
        console = Console(file=io.StringIO(), width=120, color_system=None)
        table_s, _ = timed(lambda: console.print(per_class_table(data.class_names, rec, "epoch 2", top_k=TOP_K)))
        plots_s, written = timed(lambda: write_run_plots(load_run(run.path), Path(tmp) / "plots", top_k=TOP_K))
    t = rec["time_s"]
    state = trainer.balancer.controller.state_dict()
    epoch_s = sum(t.values())
    loop_s = t["ema"] + t["heldout_eval"] + t["control"]
    return {"classes": classes, "per_class": per_class, "splits": {k: len(v) for k, v in data.splits().items()},
            "time_s": t, "epoch_s": epoch_s, "calibration_fit_select_s": fit_s,
            "calibration_fit_big_s": big_fit_s, "fit_n": fit_n, "table_s": table_s, "plots_s": plots_s,
            "plots": len(written),
            "loop_share": loop_s / epoch_s, "loop_and_fit_share": (loop_s + fit_s) / epoch_s,
            "controller_state_bytes": sum(v.numel() * v.element_size() for v in state.values()),
            "confusion_bytes": classes * classes * 8}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# The loop at 10-1,000 classes (CPU)", "", f"`{meta['command']}`", "", meta["machine"], "",
             "Shares are of the whole epoch (train + EMA + control evaluation + controller + select evaluation). "
             "\"loop\" = EMA updates + control evaluation + controller update; the calibration fit runs once, "
             "at the end of a run, and is shown against one epoch as an upper bound.", "",
             "| classes | images/class | train s | control eval s | controller s | select eval s | "
             "loop share | + fit share | fit on select s | fit N x C s | table s | plots s | "
             "controller state | confusion |", "|" + "---:|" * 14]
    for r in rows:
        t = r["time_s"]
        lines.append(
            f"| {r['classes']:,} | {r['per_class']} | {t['train']:.1f} | {t['heldout_eval']:.2f} | "
            f"{t['control']:.3f} | {t.get('select_eval', 0):.2f} | {100 * r['loop_share']:.1f} % | "
            f"{100 * r['loop_and_fit_share']:.1f} % | {r['calibration_fit_select_s']:.2f} | "
            f"{r['calibration_fit_big_s']:.2f} ({r['fit_n']:,} x {r['classes']:,}) | {r['table_s']:.3f} | "
            f"{r['plots_s']:.2f} | {r['controller_state_bytes'] / 1e6:.2f} MB | {r['confusion_bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", nargs="+", type=int, default=[10, 100, 1000])
    ap.add_argument("--images", type=int, default=60_000, help="train + held-out images, over all classes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-n", type=int, default=50_000, help="held-out size of the large calibration fit")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_classes_cpu"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for c in args.classes:
        rows.append(one_size(c, args.images, args.threads, args.fit_n))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "time_s"}), flush=True)
    meta = {"command": "python bench/scale_classes.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if k != "out"),
            "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads; torch "
                       f"{torch.__version__}; the 2-core machine was shared with other benchmark runs"}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
