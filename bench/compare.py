"""Method comparison: every method of a suite, same data, model and epochs, several seeds.

Suites: ``fashion_mnist`` (balanced, the closed loop's variants and baselines), ``fashion_mnist_lt100``
(Fashion-MNIST-LT, rho = 100: configs/fashion_mnist_lt100.yaml plus one overlay of configs/methods/ each) and
``names`` (names -> nationality with char_gru, the default 12 countries; needs the names extra).
Each (method, seed) is one ``adaptive-lb train`` run (one CPU thread each, ``--jobs`` at a time); the
summaries are then reduced to mean +- std over seeds. Finished runs are reused, so an interrupted
benchmark continues where it stopped. Post-hoc methods are scored with their post-hoc biases.

    .venv/bin/python bench/compare.py --suite fashion_mnist --seeds 0 1 2 --jobs 2
    .venv/bin/python bench/compare.py --suite fashion_mnist_lt100 --seeds 0 1 2 --jobs 2
    .venv/bin/python bench/compare.py --suite names --seeds 0 1 2 --jobs 1

Writes ``bench/results/compare_<suite>.json`` (every run's numbers and per-epoch trajectories) and ``.md``.
``--merge`` re-runs only ``--methods`` and keeps the other methods' stored results; the rows it replaces stay
in the JSON (``superseded``) and at the foot of the table, marked as such.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adaptive_lb.report import mean_std

ROOT = Path(__file__).resolve().parents[1]

LT_METHODS = ("erm", "inverse_freq", "effective_number", "focal", "ldam_drw", "logit_adjusted", "posthoc_equalise",
              "closed_loop", "closed_loop_la", "closed_loop_ldam")
# suite -> method -> (config files merged left to right, overrides); same data, model and budget per suite
SUITES: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "fashion_mnist": {
        "erm": (["configs/fashion_mnist_erm.yaml"], []),
        "two_pass": (["configs/fashion_mnist_two_pass.yaml"], []),
        "cdb": (["configs/fashion_mnist_cdb.yaml"], []),
        "posthoc_equalise": (["configs/fashion_mnist_erm.yaml", "configs/methods/posthoc_equalise.yaml"], []),
        "damped_weights": (["configs/fashion_mnist.yaml"], ["controller.margin_gain=0", "controller.aug_gain=0"]),
        # every class starts at intensity 0.3 so that "augmented" is not a class cue; easy classes get more
        "damped_weights_aug": (["configs/fashion_mnist.yaml"], [
            "controller.margin_gain=0", "controller.aug_gain=-0.1", "controller.aug_init=0.3",
            "augment.ops=[flip,affine]"]),
        "damped_weights_margins": (["configs/fashion_mnist.yaml"], []),  # the shipped default
    },
    "fashion_mnist_lt100": {
        **{m: (["configs/fashion_mnist_lt100.yaml", f"configs/methods/{m}.yaml"], []) for m in LT_METHODS},
        # class-balanced weights reduced as LDAM-DRW's code re-implements that baseline (F.cross_entropy(weight=w));
        # the effective_number overlay keeps the CB authors' own mean(w_y l)
        "effective_number_wmean": (["configs/fashion_mnist_lt100.yaml", "configs/methods/effective_number.yaml"],
                                   ["loss.reduction=weighted_mean"]),
        # the same ERM model, biases chosen for accuracy first: the post-hoc accuracy/evenness trade-off
        "posthoc_equalise_sw0.5": (["configs/fashion_mnist_lt100.yaml", "configs/methods/posthoc_equalise.yaml"],
                                   ["posthoc.spread_weight=0.5"]),
    },
    "names": {
        "erm": (["configs/names_erm.yaml"], []),
        "posthoc_equalise": (["configs/names_erm.yaml", "configs/methods/posthoc_equalise.yaml"], []),
        "closed_loop": (["configs/names.yaml"], []),  # the shipped default: weights and logit offsets
        # plus per-class character edits: every class starts at 0.3 (edits are no class cue), easy ones get more
        "closed_loop_aug": (["configs/names.yaml"], ["controller.aug_gain=-0.1", "controller.aug_init=0.3"]),
    },
}
TITLES = {"fashion_mnist": "Fashion-MNIST (balanced)", "fashion_mnist_lt100": "Fashion-MNIST-LT, rho = 100",
          "names": "Names -> nationality (12 countries, char_gru)"}
METRICS = ("accuracy", "balanced_accuracy", "tpr_std", "worst_tpr")


def run_one(suite: str, method: str, seed: int, runs: Path, extra: list[str]) -> Path:
    """Train (method, seed) unless its summary.json exists; return the run dir."""
    configs, overrides = SUITES[suite][method]
    return train_run(runs / method / f"seed{seed}", configs, [*overrides, *extra, f"train.seed={seed}"])


def train_run(out: Path, configs: list[str], overrides: list[str]) -> Path:
    """``adaptive-lb train CONFIGS OVERRIDES --out OUT`` on one CPU thread, logging to ``OUT.log``; a finished run
    (summary.json) is reused and a checkpointed one resumed, so an interrupted benchmark continues."""
    if (out / "summary.json").is_file():
        return out
    args = [sys.executable, "-m", "adaptive_lb", "train", *(str(ROOT / c) for c in configs), *overrides,
            "train.threads=1", "--quiet", "--no-plots"]
    if (out / "checkpoint.pt").is_file():
        args = [sys.executable, "-m", "adaptive_lb", "train", "--resume", str(out), "--quiet", "--no-plots"]
    else:
        args += ["--out", str(out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".log"), "a") as log:
        subprocess.run(args, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return out


def read_run(path: Path, calibrated: bool) -> dict:
    """Final test metrics (with the run's post-hoc biases when ``calibrated``: the post-hoc methods; every other
    row is the model's own), per-epoch trajectory and the controller's share of epoch time for one run."""
    summary = json.loads((path / "summary.json").read_text())
    if calibrated:
        summary = {**summary, **summary.get("posthoc", {})}
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in records]
    epoch_s = sum(sum(t.values()) for t in times)
    control_s = sum(t["heldout_eval"] + t["control"] for t in times)
    return {
        "test": {k: summary["test"][k] for k in (*METRICS, "tpr", "worst_class")},
        "heldout": {k: summary["heldout"][k] for k in METRICS},
        "class_names": summary["class_names"],
        "controller_share": control_s / epoch_s,
        "epoch_s": epoch_s / len(records),
        "trajectory": [{"epoch": r["epoch"], "heldout_tpr_std": r["heldout"]["tpr_std"],
                        "test_tpr_std": r["test"]["tpr_std"], "test_accuracy": r["test"]["accuracy"],
                        "class_weights": r["class_weights"], "aug_intensity": r["aug_intensity"],
                        "logit_margin": r["logit_margin"]} for r in records],
    }


def merge_stored(stored: dict, results: dict[str, list[dict]], order: list[str], command: str) -> dict:
    """``--merge``: the stored results of the methods not re-run, then the new ones, in suite order; each method's
    source command; and the stored results that the new ones supersede (older superseded entries are kept)."""
    old = stored.get("results", {})
    sources = stored.get("sources") or {m: stored.get("command", "?") for m in old}
    superseded = dict(stored.get("superseded", {}))
    for m in results:
        if m in old:
            superseded[m] = {"command": sources.get(m, "?"), "results": old[m]}
    return {"results": {m: results.get(m, old.get(m)) for m in order if m in results or m in old},
            "sources": {**sources, **dict.fromkeys(results, command)}, "superseded": superseded}


def table(results: dict[str, list[dict]]) -> str:
    """Markdown table of mean +- std over seeds of the final test metrics."""
    lines = ["| method | seeds | test accuracy | balanced acc. | TPR std | worst-class TPR | worst class | "
             "controller share of epoch |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for method, runs in results.items():
        cells = []
        for key in METRICS:
            m, s = mean_std([r["test"][key] for r in runs])
            cells.append(f"{m:.4f} ± {s:.4f}")
        worst = sorted({r["test"]["worst_class"] for r in runs})
        share = statistics.fmean(r["controller_share"] for r in runs)
        lines.append(f"| {method} | {len(runs)} | {' | '.join(cells)} | {', '.join(worst)} | {share:.1%} |")
    return "\n".join(lines)


def per_class(results: dict[str, list[dict]]) -> str:
    """Markdown table of mean per-class test TPR over seeds."""
    names = next(iter(results.values()))[0]["class_names"]
    lines = ["| class | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for c, name in enumerate(names):
        row = [f"{statistics.fmean(r['test']['tpr'][c] for r in runs):.3f}" for runs in results.values()]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def trajectories(results: dict[str, list[dict]]) -> str:
    """Markdown table: held-out and test TPR std per epoch, mean over seeds (two_pass runs 2 x epochs)."""
    longest = max(len(runs[0]["trajectory"]) for runs in results.values())
    lines = ["| epoch | " + " | ".join(results) + " |", "|---:|" + "---:|" * len(results)]
    for e in range(longest):
        row = []
        for runs in results.values():
            if e < min(len(r["trajectory"]) for r in runs):
                held = statistics.fmean(r["trajectory"][e]["heldout_tpr_std"] for r in runs)
                test = statistics.fmean(r["trajectory"][e]["test_tpr_std"] for r in runs)
                row.append(f"{held:.3f} / {test:.3f}")
            else:
                row.append("")
        lines.append(f"| {e + 1} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="fashion_mnist", choices=list(SUITES))
    parser.add_argument("--methods", nargs="+", help="a subset of the suite's methods (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each uses one CPU thread)")
    parser.add_argument("--runs", help="folder for the run dirs (default runs/bench_<suite>)")
    parser.add_argument("--out", help="output stem (default bench/results/compare_<suite>)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the stored results of the methods not re-run (see the module docstring)")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.epochs=2")
    args = parser.parse_args()
    methods = SUITES[args.suite]
    args.methods = args.methods or list(methods)
    unknown = [m for m in args.methods if m not in methods]
    if unknown:
        parser.error(f"suite {args.suite} has no method(s) {', '.join(unknown)}; it has {', '.join(methods)}")
    runs = (ROOT / (args.runs or f"runs/bench_{args.suite}")).resolve()
    start = time.perf_counter()
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        dirs = list(pool.map(lambda job: run_one(args.suite, *job, runs, args.overrides), jobs))
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for (method, _), path in zip(jobs, dirs, strict=True):
        results[method].append(read_run(path, calibrated=method.startswith("posthoc")))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads 1 per run, {args.jobs} runs at a time"
    out = ROOT / (args.out or f"bench/results/compare_{args.suite}")
    write_outputs(out, args, results, machine, time.perf_counter() - start)


def write_outputs(out: Path, args: argparse.Namespace, results: dict[str, list[dict]], machine: str,
                  seconds: float) -> None:
    """Write ``out``.json and .md (with ``--merge``: over the stored results too) and print the .md."""
    methods, command = SUITES[args.suite], " ".join(["python bench/compare.py", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    stored_path = out.with_suffix(".json")
    stored = json.loads(stored_path.read_text()) if args.merge and stored_path.is_file() else {}
    merged = merge_stored(stored, results, list(methods), command) if stored else {}
    superseded = merged.get("superseded", {})
    if merged:
        results = merged["results"]
        machine = f"{machine}; rows not re-run come from their own `sources` command ({stored.get('machine', '?')})"
    out.with_suffix(".json").write_text(json.dumps({
        "command": command, "machine": machine, "seeds": args.seeds, "methods": {m: methods[m] for m in results},
        "results": results, **({k: merged[k] for k in ("sources", "superseded")} if merged else {})}, indent=1))
    old_rows = {f"{m} (superseded)": v["results"] for m, v in superseded.items()}
    text = (f"# {TITLES[args.suite]}: method comparison\n\n`{command}`  \n{machine}; wall time "
            f"{seconds / 60:.1f} min (runs already present are reused).\n\n"
            f"Final test metrics, mean ± std over seeds {args.seeds}:\n\n{table({**results, **old_rows})}\n\n"
            f"Mean per-class test TPR:\n\n{per_class(results)}\n\n"
            f"TPR std per epoch, held-out / test, mean over seeds:\n\n{trajectories(results)}\n")
    out.with_suffix(".md").write_text(text)
    print(text)

if __name__ == "__main__":
    main()
