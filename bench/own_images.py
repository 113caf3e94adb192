"""Your own images on a small set: configs/imagefolder.yaml (train.batch_size=auto) against the old fixed
batch of 256, and how fast a second run starts on a cached image folder.

Writes Fashion-MNIST as an image folder of PNGs (``--per-class`` training and ``--test-per-class`` test images
per class, the first ones of each class in the IDX files), then trains ``configs/imagefolder.yaml`` on it
through the CLI (grey, 28 x 28, one torch thread) for every seed, with ``train.batch_size=auto`` and with
``train.batch_size=256``. Start-up: seconds from launching ``adaptive-lb train`` to the line that opens the
first epoch, with an empty image cache and again with the cache filled, on that folder and (``--big``) on
all 70,000 images.

    .venv/bin/python bench/own_images.py --seeds 0 1 2 --big     # ~15 min on one busy core

Writes ``bench/results/own_images.{md,json}``; folders and run dirs go to ``bench/out/own_images/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "own_images"
CONFIG = ROOT / "configs" / "imagefolder.yaml"
COMMON = ["data.channels=1", "data.image_size=28", "train.threads=1", "train.device=cpu"]
VARIANTS = {"batch_size=auto, spread_weight=auto (configs/imagefolder.yaml)": [],
            "batch_size=auto, spread_weight=1 (fixed, as before)": ["posthoc.spread_weight=1.0"],
            "batch_size=256 (fixed, as before), spread_weight=auto": ["train.batch_size=256"]}


def write_folder(folder: Path, per_class: int, test_per_class: int) -> None:
    """Fashion-MNIST as ``folder/{train,test}/<class>/<index>.png`` (skipped when the folder is complete)."""
    sys.path.insert(0, str(ROOT))
    from adaptive_lb.data.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    done = folder / ".complete"
    if done.is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    raw = load_fashion_mnist("", False)
    for split, x, y, n in (("train", raw.x_train, raw.y_train, per_class), ("test", raw.x_test, raw.y_test,
                                                                             test_per_class)):
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            target = folder / split / name.replace("/", "-")  # "T-shirt/top" cannot be a folder name
            target.mkdir(parents=True)
            for i in (y == c).nonzero().flatten()[:n].tolist():
                Image.fromarray(x[i, 0].numpy()).save(target / f"{i:05d}.png")
    done.write_text("")


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "adaptive_lb", "train", str(CONFIG), *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def train(folder: Path, seed: int, extra: list[str], out: Path) -> dict:
    """One CLI run (skipped when finished); its summary and resolved batch size."""
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        args = [f"data.root={folder}", f"data.cache_dir={folder.parent / 'cache'}", f"train.seed={seed}",
                *COMMON, *extra, "--out", str(out), "--quiet", "--no-plots"]
        subprocess.run(cli(args), env=env(), check=True, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    config = (out / "config.yaml").read_text()
    batch = int(config.split("batch_size:")[1].split()[0])
    return {"seed": seed, "batch_size": batch, "steps_per_epoch": -(-summary["splits"]["train"] // batch),
            "test_acc": summary["test"]["accuracy"], "test_worst": summary["test"]["worst_tpr"],
            "cal_test_acc": summary["posthoc"]["test"]["accuracy"],
            "cal_test_worst": summary["posthoc"]["test"]["worst_tpr"],
            "spread_weight": summary["posthoc"]["spread_weight"]}


def start_seconds(folder: Path | None, cache: Path) -> float:
    """Seconds from launch to the first epoch's start line ("training ... epochs 1..N"); the run is then stopped.
    ``folder`` None: configs/fashion_mnist.yaml on its IDX files, the built-in reference."""
    out = OUT / "startup_run"
    shutil.rmtree(out, ignore_errors=True)
    if folder is None:
        command = [*cli([])[:-1], str(ROOT / "configs" / "fashion_mnist.yaml"), *COMMON[2:]]
    else:
        command = cli([f"data.root={folder}", f"data.cache_dir={cache}", *COMMON])
    start = time.perf_counter()
    proc = subprocess.Popen([*command, "--out", str(out), "--quiet", "--no-plots"], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("training "):
            seconds = time.perf_counter() - start
            break
    else:
        raise SystemExit(f"no start line from {folder}")
    proc.terminate()
    proc.wait()
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def load_seconds(folder: Path, cache: Path) -> tuple[float, float]:
    """In-process seconds of the data loader alone: decoding into an empty cache, then reading it back."""
    import torch

    from adaptive_lb.config_io import load_config
    from adaptive_lb.data.datasets import load_dataset

    torch.set_num_threads(1)
    shutil.rmtree(cache, ignore_errors=True)
    cfg = load_config(CONFIG, [f"data.root={folder}", f"data.cache_dir={cache}", *COMMON]).data
    times = []
    for _ in range(2):
        start = time.perf_counter()
        load_dataset(cfg, 0)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def startup(folder: Path) -> dict:
    """Start-up seconds with an empty cache, then twice with the filled one; the loader alone, in process."""
    cache = folder.parent / f"cache_startup_{folder.name}"
    shutil.rmtree(cache, ignore_errors=True)
    first = start_seconds(folder, cache)
    second, third = start_seconds(folder, cache), start_seconds(folder, cache)
    decode, read = load_seconds(folder, cache)
    return {"folder": folder.name, "first": first, "second": second, "third": third, "load_decode": decode,
            "load_cached": read}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0:.4f}"


def render(result: dict) -> str:
    a = result["args"]
    lines = [f"# Own images: {a['per_class']} training images per class (Fashion-MNIST PNGs), seeds "
             f"{', '.join(map(str, a['seeds']))}", "",
             f"Command: `{result['command']}`  ",
             f"configs/imagefolder.yaml with {' '.join(COMMON)} (grey 28x28, one torch thread), "
             f"{a['per_class']}/class train + {a['test_per_class']}/class test, 10 classes; {result['machine']}. "
             "Test numbers are reported only; `calibrated` = the config's post-hoc equalise step (fitted on select).",
             "", "| variant | batch | steps/epoch | test acc | test worst TPR | calibrated test acc | "
             "calibrated worst TPR |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, runs in result["runs"].items():
        cols = [mean_std([r[k] for r in runs]) for k in ("test_acc", "test_worst", "cal_test_acc", "cal_test_worst")]
        lines.append(f"| {name} | {runs[0]['batch_size']} | {runs[0]['steps_per_epoch']} | {' | '.join(cols)} |")
    lines += ["", "Per seed (test acc / worst TPR, raw model; calibrated; the spread weight used, chosen on select "
              "when auto):", ""]
    for name, runs in result["runs"].items():
        per = ", ".join(f"seed {r['seed']}: {r['test_acc']:.4f} / {r['test_worst']:.4f} (calibrated "
                        f"{r['cal_test_acc']:.4f} / {r['cal_test_worst']:.4f}, spread weight {r['spread_weight']:g})"
                        for r in runs)
        lines.append(f"- {name}: {per}")
    lines += ["", "Start-up, seconds from launching `adaptive-lb train` to the first epoch's start line (imports, "
              "data, model), and the image loader alone in process (`load_dataset`):", "",
              "| folder | images | launch, empty cache | launch, cached (2nd run) | launch, cached (3rd run) | "
              "loader: decode + write cache | loader: cache hit |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in result["startup"]:
        lines.append(f"| {s['folder']} | {s['images']:,} | {s['first']:.1f} | {s['second']:.1f} | {s['third']:.1f} | "
                     f"{s['load_decode']:.2f} | {s['load_cached']:.2f} |")
    ref = result["reference_start"]
    lines += ["", f"Reference: `adaptive-lb train configs/fashion_mnist.yaml` (IDX files, 70,000 images) reaches its "
              f"first epoch in {ref:.1f} s on the same machine at the same time."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--big", action="store_true", help="also time start-up on all 70,000 images")
    parser.add_argument("--machine", default="2-core CPU machine shared with two other benchmark runs")
    args = parser.parse_args()
    folder = OUT / f"fmnist_png_{args.per_class}"
    write_folder(folder, args.per_class, args.test_per_class)
    runs = {name: [train(folder, s, extra, OUT / "runs" / f"{i}" / f"seed{s}") for s in args.seeds]
            for i, (name, extra) in enumerate(VARIANTS.items())}
    timing = [{**startup(folder), "images": 10 * (args.per_class + args.test_per_class)}]
    if args.big:
        big = OUT / "fmnist_png_all"
        write_folder(big, 6000, 1000)
        timing.append({**startup(big), "images": 70_000})
    result = {"command": shlex.join(["python", "bench/own_images.py", *sys.argv[1:]]), "args": vars(args),
              "machine": args.machine, "runs": runs, "startup": timing,
              "reference_start": start_seconds(None, OUT / "unused")}
    (ROOT / "bench" / "results" / "own_images.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (ROOT / "bench" / "results" / "own_images.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
