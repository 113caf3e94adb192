"""examples/own_loop.py with and without the balancer, over seeds: worst-class recall on the held-out select split.

    .venv/bin/python bench/own_loop.py --seeds 0 1 2     # writes bench/results/own_loop.{md,json}

Each (method, seed) is one run of the example in a subprocess (1 torch thread); the same seed gives both methods
the same splits, initial weights and batch order, so the comparison is paired. The claim is read on ``select``
(held out from training, never read by the balancer), never on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
METHODS = ("plain", "balancer")
KEYS = (("select_worst", "select worst-class recall"), ("select_mean", "select mean recall"),
        ("test_accuracy", "test accuracy (reported only)"))


def run(method: str, seed: int, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "examples" / "own_loop.py"), "--seed", str(seed), *extra,
           *(["--plain"] if method == "plain" else [])]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{method} seed {seed}: select worst {result['select_worst']:.3f} ({result['select_worst_class']}), "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    return result


def table(results: list[dict]) -> list[str]:
    rows = ["| method | " + " | ".join(label for _, label in KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    for method in METHODS:
        mine = [r for r in results if r["method"] == method]
        cells = [f"{statistics.mean(r[k] for r in mine):.4f} ± {statistics.stdev(r[k] for r in mine):.4f}"
                 for k, _ in KEYS]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    t0 = time.perf_counter()
    results = [run(m, s, ["--epochs", str(args.epochs)]) for s in args.seeds for m in METHODS]
    by = {(r["method"], r["seed"]): r for r in results}
    diffs = [by["balancer", s]["select_worst"] - by["plain", s]["select_worst"] for s in args.seeds]
    command = f".venv/bin/python bench/own_loop.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}"
    lines = [f"# examples/own_loop.py: plain loop vs RecallBalancer ({len(args.seeds)} seeds)", "", f"`{command}`",
             "", f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, 1 torch thread; "
             f"{time.perf_counter() - t0:.0f} s in all.", "", "Mean ± std over seeds (sample std):", "",
             *table(results), "", "Paired difference in select worst-class recall (balancer - plain), per seed: "
             + ", ".join(f"{d:+.4f}" for d in diffs) + f"; mean {statistics.mean(diffs):+.4f}.", "",
             "Per run:", "", "| method | seed | select worst (class) | select mean | test accuracy |",
             "|---|---:|---|---:|---:|",
             *(f"| {r['method']} | {r['seed']} | {r['select_worst']:.3f} ({r['select_worst_class']}) | "
               f"{r['select_mean']:.4f} | {r['test_accuracy']:.4f} |" for r in results)]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "own_loop.md").write_text("\n".join(lines) + "\n")
    (OUT / "own_loop.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
