"""Trainer throughput vs a minimal hand-written PyTorch loop, in one process.

Same model (same init), same device-resident Fashion-MNIST training part, same batch size, optimiser,
schedule and memory format. The hand loop is what a user would write in ten lines: normalise the whole
set once, shuffle, slice, forward, cross-entropy, backward, step. The two are run alternately, one epoch
at a time, ``--repeats`` times each; the median epoch is reported.

    .venv/bin/python bench/throughput.py --repeats 3 --out bench/results/throughput_cpu

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptive_lb.config_io import load_config
from adaptive_lb.data import build_data
from adaptive_lb.models import create_model
from adaptive_lb.optim import create_optimizer, create_scheduler
from adaptive_lb.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def hand_loop_data(data, device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training part normalised once, as a minimal loop would hold it: (N, C, H, W) float, (N,)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = data.mean.view(1, -1, 1, 1).to(device), data.std.view(1, -1, 1, 1).to(device)
    x = ((data.train.x.to(device).float() / 255 - mean) / std).contiguous(memory_format=fmt)
    return x, data.train.y.to(device)


def hand_loop_epoch(cfg, data, x, y, channels_last: bool) -> float:
    """One epoch of the minimal loop on prepared ``x, y``; returns seconds."""
    torch.manual_seed(cfg.train.seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(cfg.model, data.in_channels, data.num_classes).to(x.device, memory_format=fmt)
    bs = cfg.train.batch_size
    opt = create_optimizer(cfg.optim, model)
    sched = create_scheduler(cfg.optim, opt, 1, -(-len(y) // bs))
    start = time.perf_counter()
    perm = torch.randperm(len(y), device=x.device)
    for i in range(0, len(y), bs):
        idx = perm[i:i + bs]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    loss.item()  # wait for the device
    return time.perf_counter() - start


def trainer_epoch(cfg, data) -> dict:
    """One epoch of ``Trainer.fit``; returns its record's timings."""
    trainer = Trainer(replace(cfg, train=replace(cfg.train, epochs=1)), data)
    start = time.perf_counter()
    trainer.fit()
    total = time.perf_counter() - start
    return {**trainer.last_record["time_s"], "fit_total": total}


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}, Python " \
           f"{platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput_cpu"))
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    data = build_data(cfg.data, cfg.train.seed)
    probe = Trainer(replace(cfg, train=replace(cfg.train, epochs=1)), data)
    device, channels_last = probe.device, probe.channels_last
    x, y = hand_loop_data(data, device, channels_last)
    hand_loop_epoch(cfg, data, x, y, channels_last)  # warm-up (allocator, kernels)
    hand, ours = [], []
    for r in range(args.repeats):
        hand.append(hand_loop_epoch(cfg, data, x, y, channels_last))
        ours.append(trainer_epoch(cfg, data))
        print(f"repeat {r + 1}: hand {hand[-1]:.2f}s, trainer train {ours[-1]['train']:.2f}s "
              f"(+ control eval {ours[-1]['heldout_eval']:.2f}s, test eval {ours[-1]['test_eval']:.2f}s)", flush=True)
    n = len(data.train)
    med = {k: statistics.median(o[k] for o in ours) for k in ours[0]}
    hand_s = statistics.median(hand)
    epoch_s = sum(v for k, v in med.items() if k != "fit_total")  # time_s phases are disjoint
    result = {
        "command": " ".join(["python bench/throughput.py", f"--repeats {args.repeats}", *args.overrides]),
        "machine": machine(), "device": str(device), "channels_last": channels_last,
        "images_per_epoch": n, "batch_size": cfg.train.batch_size, "model": cfg.model.name,
        "hand_loop_s": hand, "trainer": ours,
        "hand_images_per_s": n / hand_s, "trainer_train_images_per_s": n / med["train"],
        "ratio_train": hand_s / med["train"],
        "ratio_epoch_with_eval": hand_s / epoch_s,
        "heldout_eval_share": med["heldout_eval"] / epoch_s,
        # the loop's own cost: EMA updates (train.ema_decay > 0) + held-out evaluation + controller update
        "ema_share": med.get("ema", 0.0) / epoch_s,
        "loop_share": (med.get("ema", 0.0) + med["heldout_eval"] + med["control"]) / epoch_s,
        "raw_eval_share": med.get("raw_eval", 0.0) / epoch_s,  # the live model's evaluation (reporting only)
        # the select split's evaluation: choices and tune's objective, never read by the controller
        "select_eval_share": med.get("select_eval", 0.0) / epoch_s,
        "test_eval_share": med["test_eval"] / epoch_s,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(
        f"# Trainer vs hand-written loop ({result['device']})\n\n"
        f"Command: `{result['command']}`  \nMachine: {result['machine']}  \n"
        f"Model {result['model']}, batch {result['batch_size']}, {n} training images per epoch, channels_last "
        f"{channels_last}; median of {args.repeats} alternating epochs.\n\n"
        "| loop | train images/s | ratio to hand loop |\n|---|---:|---:|\n"
        f"| hand-written | {result['hand_images_per_s']:,.0f} | 1.000 |\n"
        f"| adaptive_lb Trainer (train phase) | {result['trainer_train_images_per_s']:,.0f} | "
        f"{result['ratio_train']:.3f} |\n"
        f"| adaptive_lb Trainer (whole epoch: + EMA, held-out and test evaluation) | "
        f"{n / (hand_s / result['ratio_epoch_with_eval']):,.0f} | {result['ratio_epoch_with_eval']:.3f} |\n\n"
        f"The loop's own cost, as shares of the trainer's epoch: control-split evaluation "
        f"{100 * result['heldout_eval_share']:.1f} %, EMA updates {100 * result['ema_share']:.2f} %; **EMA + control "
        f"evaluation + controller {100 * result['loop_share']:.1f} %**. Reporting beside it: the select split "
        f"{100 * result['select_eval_share']:.1f} %, the test split {100 * result['test_eval_share']:.1f} %, the live "
        f"model's evaluation beside the EMA's {100 * result['raw_eval_share']:.1f} % (`train.raw_every`).\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
