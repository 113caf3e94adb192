"""Scaling benchmarks. ``--ddp``: training images/s of 1 process vs N processes (DDP, gloo) on the CPU.

    .venv/bin/python bench/scale.py --ddp                      # 1 process x 2 threads vs 2 processes x 1 thread
    .venv/bin/python bench/scale.py --ddp --per-class 1000 --epochs 5 --seeds 0 1 2   # + accuracy over seeds

Each setting is a real ``adaptive-lb train`` run (``--nproc N`` for N > 1) on a Fashion-MNIST subset with the
shipped config (small CNN, width 24, EMA on, global batch 256); images/s is the run's own ``train_images_per_s``
(all ranks' training images over the wall time of the training phase, evaluation excluded), best epoch of the
run (the first epoch includes start-up effects). Results go to bench/results/scale_ddp_cpu.{md,json}.
``--rows FILE`` renders them from the JSON lines an earlier run printed (one per run), training nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def train_run(nproc: int, threads: int, per_class: int, epochs: int, out: Path, seed: int = 0) -> dict:
    """One ``adaptive-lb train`` run with ``nproc`` processes of ``threads`` threads; its images/s per epoch."""
    cmd = [sys.executable, "-m", "adaptive_lb", "train", str(ROOT / "configs" / "fashion_mnist.yaml"),
           f"data.subset_per_class={per_class}", "data.test_subset_per_class=200", f"train.epochs={epochs}",
           f"train.seed={seed}",
           f"train.threads={threads}", "train.device=cpu", "--out", str(out), "--quiet", "--no-plots"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"run with {nproc} process(es) failed:\n{res.stderr[-2000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {"nproc": nproc, "threads_per_process": threads, "seed": seed, "wall_s": round(wall, 1),
            "images_per_s": [round(r["train_images_per_s"], 1) for r in records],
            "train_s": [round(r["time_s"]["train"], 2) for r in records],
            "test_accuracy": summary["test"]["accuracy"]}


def ddp(args: argparse.Namespace) -> None:
    """1 process x ``cores`` threads vs ``nproc`` processes x ``cores // nproc`` threads, one run per seed each."""
    cores = args.cores
    settings = [(1, cores), (args.nproc, max(1, cores // args.nproc))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for nproc, threads in settings:
                row = train_run(nproc, threads, args.per_class, args.epochs, Path(tmp) / f"s{seed}-{nproc}", seed)
                row["best_images_per_s"] = max(row["images_per_s"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_ddp(rows, args)


def write_ddp(rows: list[dict], args: argparse.Namespace) -> None:
    command = (f"bench/scale.py --ddp --per-class {args.per_class} --epochs {args.epochs} --nproc {args.nproc} "
               f"--cores {args.cores} --seeds {' '.join(map(str, args.seeds))}")
    # re-rendered from printed rows: the load of the training machine is not known now
    load = float("nan") if args.rows else os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"command": command, "cpu_count": os.cpu_count(), "load_avg_1min_at_end": round(load, 2),
            "machine": platform.platform(), "python": platform.python_version(),
            **({"rendered_from": args.rows} if args.rows else {})}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale_ddp_cpu.json").write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")
    lines = ["# Training images/s: 1 process vs several (DDP, gloo, CPU)", "",
             f"`{command}` — Fashion-MNIST, {args.per_class} images per class before the held-out split, shipped "
             f"config (small CNN width 24, EMA, global batch 256), {args.epochs} epochs; images/s = all ranks' "
             "training images / training wall time, best epoch of each run.", "",
             f"Machine: {os.cpu_count()} CPU cores, **shared with other jobs** ("
             + (f"rendered from the rows the runs printed, `{args.rows}`, so the load was not recorded" if args.rows
                else f"1-minute load average {load:.1f} at the end")
             + "): the numbers are noisy; compare within a row pair, not across machines.", "",
             "| processes x threads | seed | images/s per epoch | best images/s | wall s (whole run) | test acc |",
             "|---|---:|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nproc']} x {r['threads_per_process']} | {r['seed']} | "
                     f"{', '.join(f'{v:.0f}' for v in r['images_per_s'])} | {r['best_images_per_s']:.0f} | "
                     f"{r['wall_s']:.0f} | {r['test_accuracy']:.4f} |")
    lines += ["", "Test accuracy over seeds (same seed = same data, splits and initial weights; the processes differ "
              "in BatchNorm statistics per rank and in augmentation draws):", ""]
    for nproc in sorted({r["nproc"] for r in rows}):
        acc = [r["test_accuracy"] for r in rows if r["nproc"] == nproc]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"- {nproc} process(es): {statistics.fmean(acc):.4f} ± {std:.4f} (n = {len(acc)})")
    lines += ["", "What to expect: on a CPU, N processes share the same cores that one process's N threads would use, "
              "so DDP adds gradient all-reduce and BatchNorm-buffer averaging every step and gains little or "
              "nothing; it exists here to test the multi-process path. On GPUs each rank has its own device, the "
              "all-reduce overlaps the backward pass (NCCL), and throughput grows nearly with the GPU count for "
              "models whose step is compute-bound; with the small CNN on 28x28 images a step is so short that "
              "launch and communication latency dominate and the gain is smaller. No GPU run was made."]
    (RESULTS / "scale_ddp_cpu.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ddp", action="store_true", help="1 process vs --nproc processes on the CPU (gloo)")
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class (before held-out)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2, help="threads of the 1-process run, split over --nproc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and setting")
    parser.add_argument("--rows", help="render the results from this file of printed JSON rows (trains nothing)")
    args = parser.parse_args()
    if not args.ddp:
        parser.error("choose a benchmark: --ddp")
    if args.rows:
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.startswith("{")]
        if {r["seed"] for r in rows} != set(args.seeds) or not rows:
            parser.error(f"{args.rows} holds seeds {sorted({r['seed'] for r in rows})}, not --seeds {args.seeds}")
        write_ddp(rows, args)
    else:
        ddp(args)


if __name__ == "__main__":
    main()
