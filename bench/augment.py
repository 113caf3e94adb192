"""Augmentation throughput: the batched tensor path vs the albumentations path, and their share of an epoch.

1. The augmenters alone over the whole Fashion-MNIST training part (54,000 images) at intensity 0.5 for
   every class: images/s of each tensor op and of all ops together on the training device, and of the
   albumentations pipeline in DataLoader workers (what the trainer's ``albumentations`` backend runs).
2. Whole trainer epochs with every class at intensity 0.5 (a ``damped`` controller frozen at
   ``aug_init``), per backend, against an epoch without augmentation: the augmentation's share of the
   epoch is ``(t_aug - t_none) / t_aug`` of the train phase plus evaluation.

    .venv/bin/python bench/augment.py --out bench/results/augment_cpu

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from adaptive_lb.augment.albu import AlbumentationsLoader
from adaptive_lb.augment.tensor import OPS, TensorAugmenter
from adaptive_lb.config import AUG_OPS
from adaptive_lb.config_io import load_config
from adaptive_lb.data import build_data
from adaptive_lb.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from throughput import machine  # noqa: E402  (bench/ is a folder of scripts, not a package)

INTENSITY = 0.5


def tensor_rate(x: torch.Tensor, ops: list[str], batch: int, repeats: int) -> float:
    """Images/s of ``TensorAugmenter(ops)`` over uint8 images ``x`` (N, C, H, W), batch by batch."""
    aug = TensorAugmenter(ops)
    m = torch.full((batch,), INTENSITY, device=x.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            xb = x[i:i + batch].float() / 255
            out = aug(xb, m[: len(xb)])
        out.sum().item()  # wait for the device
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def albumentations_rate(data, batch: int, workers: int) -> float:
    """Images/s of one pass of the albumentations loader (all ops, every class at INTENSITY)."""
    loader = AlbumentationsLoader(data.train, data.mean, data.std, batch, False, torch.device("cpu"), AUG_OPS,
                                  data.num_classes, workers)
    gen = torch.Generator().manual_seed(0)
    intensity = torch.full((data.num_classes,), INTENSITY)
    for _ in zip(range(3), loader.batches(gen, intensity), strict=False):  # start the workers
        pass
    start = time.perf_counter()
    n = sum(len(yb) for _, yb in loader.batches(gen, intensity))
    return n / (time.perf_counter() - start)


def epoch_times(cfg, data, backend: str | None) -> dict:
    """Timings of one trainer epoch; ``backend`` None = no augmentation."""
    ctl = replace(cfg.controller, name="damped", aug_init=INTENSITY if backend else 0.0, aug_gain=0.0,
                  margin_gain=0.0, warmup_epochs=10**6)  # frozen: intensities stay at aug_init
    aug = replace(cfg.augment, backend=backend or "tensor")
    trainer = Trainer(replace(cfg, controller=ctl, augment=aug, train=replace(cfg.train, epochs=1)), data)
    trainer.fit()
    t = trainer.last_record["time_s"]
    return {**t, "epoch": sum(t.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist.yaml"))
    ap.add_argument("--repeats", type=int, default=3, help="passes of the tensor path per op (median)")
    ap.add_argument("--epoch-repeats", type=int, default=2, help="trainer epochs per variant (median)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the albumentations path")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "augment_cpu"))
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args()
    cfg = load_config(args.config, [*args.overrides, f"augment.workers={args.workers}"])
    data = build_data(cfg.data, cfg.train.seed)
    device = Trainer(replace(cfg, train=replace(cfg.train, epochs=1)), data).device
    x = data.train.x.to(device)
    rates = {op: tensor_rate(x, [op], cfg.train.batch_size, args.repeats) for op in OPS}
    rates["all (tensor)"] = tensor_rate(x, list(AUG_OPS), cfg.train.batch_size, args.repeats)
    rates[f"all (albumentations, {args.workers} workers)"] = albumentations_rate(data, cfg.train.batch_size,
                                                                                args.workers)
    print(json.dumps(rates, indent=1), flush=True)
    runs: dict[str, list[dict]] = {"none": [], "tensor": [], "albumentations": []}
    for _ in range(args.epoch_repeats):  # alternate, so drift in machine speed hits every variant alike
        for name in runs:
            runs[name].append(epoch_times(cfg, data, None if name == "none" else name))
    epochs = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    shares = {k: (epochs[k]["epoch"] - epochs["none"]["epoch"]) / epochs[k]["epoch"]
              for k in ("tensor", "albumentations")}
    result = {"command": " ".join(["python bench/augment.py", *sys.argv[1:]]), "machine": machine(),
              "device": str(device), "intensity": INTENSITY, "images": len(x), "rates": rates, "epochs": epochs,
              "augment_share_of_epoch": shares}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Augmentation throughput ({device})", "", f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}  ",
             f"{len(x):,} Fashion-MNIST training images, batch {cfg.train.batch_size}, every class at "
             f"intensity {INTENSITY}.", "", "| augmenter | images/s |", "|---|---:|"]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in rates.items()]
    lines += ["", "| epoch (train + held-out + test evaluation) | seconds | train phase s | augmentation share |",
              "|---|---:|---:|---:|"]
    for name, t in epochs.items():
        share = f"{100 * shares[name]:.1f} %" if name in shares else "—"
        lines.append(f"| {name} | {t['epoch']:.1f} | {t['train']:.1f} | {share} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
