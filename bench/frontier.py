"""Accuracy-vs-evenness frontiers: every method at every strength of its knob, every trained model calibrated at
several trade-offs, paired seeds, choices made on ``select`` only (adaptive_lb/frontier.py holds the maths).

For each method of a suite and each value of its strength knob, one run per seed (the knob's "off" value is
the ERM run of the same seed, shared by every method, so the seeds are paired). Each finished model is then
calibrated: per-class biases fitted on its ``select`` split at spread weights 0 (raw), 0.25, 0.5, 1, 2, 4 and
scored on select and test. A method's point set is every (knob value, spread weight) pair, averaged over
seeds; its frontier is the non-dominated subset on test (reported, never used to choose).

The headline is chosen without the test split: for each method, the (knob, spread weight) point with the best
select worst-class TPR among those whose select accuracy is within ``--tolerance`` of raw ERM's, both scored
cross-fitted (biases fitted on one half of select, scored on the other); its test
numbers are compared with ERM + calibration's pick by a paired, class-stratified bootstrap over test images.

    .venv/bin/python bench/frontier.py --suite fashion_mnist --seeds 0 1 2 --jobs 2
    .venv/bin/python bench/frontier.py --suite fashion_mnist --seeds 0 1 2 --jobs 2 --tag subset \\
        data.subset_per_class=1000 train.epochs=6        # exploring on a subset

Writes ``bench/results/frontier_<suite>[_<tag>].{md,json,png}``; run dirs go to ``runs/frontier_<suite>[_<tag>]``
and are reused (an interrupted benchmark continues; each run's calibration sweep is cached beside it). Each
finished run's sweep is also kept in ``bench/results/frontier_runs/<stem>/`` (gzip, ~30 KB a run), keyed by the
resolved config it was trained with (every field, less those that cannot change the sweep: ``UNKEYED``): commit
it, and a later session, on a machine without ``runs/``, re-renders the benchmark and adds rows to it without
retraining; a record whose config differs from what its configs and overrides resolve to now (a config file or a
default edited since) is retrained, and the differing keys are printed. ``--no-train`` only renders what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from compare import ROOT, train_run
from store import changed, keyed, load_record, record_path, save_record, settings
from suites import ERM, FIRST_PASS_FROM_ERM, SUITES, TOLERANCE

from adaptive_lb.frontier import calibration_sweep, paired_bootstrap, pareto_front, pick_on_select, worst_at_accuracy

SPREAD_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # 0 = the raw model
KEYS = ("accuracy", "worst_tpr", "tpr_std", "balanced_accuracy")


def run_dir(runs: Path, method: str, value: str, seed: int) -> Path:
    return runs / method / value / f"seed{seed}"


def job_args(suite: str, job: tuple[str, str, int], overrides: list[str]) -> tuple[list[str], list[str]]:
    """The configs and overrides one (method, value, seed) run is trained with; its stored record is keyed by them."""
    method, value, seed = job
    files, values = SUITES[suite][method]
    return list(files), [*values[value], "train.test_every=0", *overrides, f"train.seed={seed}"]  # test at the end


def resolve_first_pass(runs: Path, seed: int, overrides: list[str]) -> list[str]:
    """``overrides`` with FIRST_PASS_FROM_ERM replaced by the final held-out TPR of the seed's ERM run."""
    if FIRST_PASS_FROM_ERM not in overrides:
        return overrides
    from adaptive_lb.rundir import RunDir

    erm = run_dir(runs, ERM, "off", seed)
    if not (erm / "summary.json").is_file():
        sys.exit(f"two_pass_erm needs the finished ERM run {erm.relative_to(ROOT)} (its metrics.jsonl): "
                 f"run the ERM rows of seed {seed} first (a stored ERM record alone does not hold the TPR)")
    tpr = RunDir(erm).read_metrics()[-1]["heldout"]["tpr"]
    given = f"controller.first_pass_tpr=[{','.join(map(repr, tpr))}]"
    return [given if o == FIRST_PASS_FROM_ERM else o for o in overrides]


def sweep(path: Path) -> tuple[list[dict], torch.Tensor]:
    """The run's calibration sweep and test labels ``(M,)`` (cached in ``frontier.pt`` beside its checkpoint)."""
    cache = path / "frontier.pt"
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if isinstance(cached, dict):  # caches made before the labels were kept in them are recomputed
            return cached["points"], cached["labels"]
    from adaptive_lb.data import build_data
    from adaptive_lb.rundir import RunDir
    from adaptive_lb.trainer import Trainer

    run = RunDir(path)
    cfg = run.config()
    trainer = Trainer(cfg, build_data(cfg.data, cfg.train.seed))
    trainer.load_state_dict(run.load_checkpoint())
    test = trainer.logits("test")
    points = calibration_sweep(trainer.logits("select"), test, SPREAD_WEIGHTS)
    torch.save({"points": points, "labels": test[1]}, cache)
    return points, test[1]


def stored(suite: str, stem: str, job: tuple[str, str, int], overrides: list[str]) -> tuple[Path, list[str], dict]:
    """Where the job's record lives in the store, its configs and overrides, and the config it must have been
    made with."""
    files, args = job_args(suite, job, overrides)
    return record_path(stem, *job), [*files, *args], settings(files, args)


def run_record(suite: str, stem: str, runs: Path, job: tuple[str, str, int], overrides: list[str],
               found: tuple[list[dict], torch.Tensor] | None) -> tuple[list[dict], torch.Tensor]:
    """The job's sweep and test labels: ``found`` in the committed store, else from its run folder (then stored)."""
    if found is None:
        from adaptive_lb.rundir import RunDir

        path, args, config = stored(suite, stem, job, overrides)
        made = keyed(RunDir(run_dir(runs, *job)).config())  # the run's own config.yaml: what it was trained with
        if diff := changed(made, config):  # a config edited since it was trained: never render it under this label
            sys.exit(f"{run_dir(runs, *job).relative_to(ROOT)} was trained with other settings than "
                     f"{' '.join(args)} resolve to now ({', '.join(diff[:4])} differ): restore the config, "
                     f"or delete the run folder to retrain it")
        found = sweep(run_dir(runs, *job))
        save_record(path, args, made, *found)
    return found


def omit_untrained(jobs: list[tuple[str, str, int]], todo: list[tuple[str, str, int]]) -> tuple[list, list]:
    """``--no-train``: the jobs less those that would be trained (listed), and nothing to train; ERM's are needed."""
    print(f"--no-train: leaving out {len(todo)} runs with no record and no finished run: "
          f"{', '.join('/'.join(map(str, j)) for j in todo)}")
    if any(j[0] == ERM for j in todo):
        sys.exit("--no-train: the ERM runs of every seed are needed (the shared 'off' point and the baseline): "
                 "train them first (drop --no-train)")
    return [j for j in jobs if j not in todo], []


def knob_values(suite: str, method: str, only: list[str] | None) -> list[str]:
    """The method's knob value labels, restricted to ``only`` when given (ERM's "off" is always kept)."""
    values = list(SUITES[suite][method][1])
    return values if not only or method == ERM else [v for v in values if v in only]


def collect(suite: str, stem: str, jobs: list[tuple[str, str, int]], runs: Path, overrides: list[str],
            found: dict[tuple[str, str, int], tuple[list[dict], torch.Tensor] | None]) -> tuple[dict, torch.Tensor]:
    """``{method: {(value, spread weight): [per-seed point]}}`` (ERM's points join every method) and test labels;
    ``found`` holds the jobs' stored records, read once (None: from the run folder)."""
    points: dict[str, dict[tuple[str, float], list[dict]]] = {}
    labels = None
    for job in jobs:
        sweep_points, labels = run_record(suite, stem, runs, job, overrides, found[job])
        for p in sweep_points:
            points.setdefault(job[0], {}).setdefault((job[1], p["spread_weight"]), []).append(p)
    for method in points:
        if method != ERM:
            points[method] = {**points[ERM], **points[method]}
    return points, labels


def mean_point(per_seed: list[dict]) -> dict:
    """Mean over seeds of the select and test metrics of one (value, spread weight) point."""
    return {split: {k: statistics.fmean(p[split][k] for p in per_seed) for k in KEYS}
            for split in ("select", "select_cv", "test")}


def matched_gaps(res: dict, erm_front: list[tuple[float, float]], min_accuracy: float) -> dict:
    """How far a method lies above ERM + calibration's test frontier at matched accuracy (worst-class TPR): at
    its pick, and the largest gap over its own points (ERM's "off" left out) of test accuracy >= ``min_accuracy``.
    Reported, never used to choose."""
    def gap(q: dict) -> float | None:
        w = worst_at_accuracy(erm_front, q["accuracy"])
        return None if w is None else q["worst_tpr"] - w

    own = [(g, q) for q in res["points"] if q["value"] != "off" and q["test"]["accuracy"] >= min_accuracy
           and (g := gap(q["test"])) is not None]
    g, q = max(own, key=lambda t: t[0], default=(None, None))
    largest = None if q is None else {"gap": g, "value": q["value"], "spread_weight": q["spread_weight"],
                                      "accuracy": q["test"]["accuracy"]}
    return {"at_pick": gap(res["pick"]["test"]), "largest": largest, "min_accuracy": min_accuracy}


def analyse(points: dict, labels: torch.Tensor, tolerance: float, versus: tuple[str, ...] = ()) -> dict:
    """Frontiers, the select-chosen picks and their paired bootstrap against ERM + calibration (and against the
    picks of the ``versus`` methods: ``vs_<method>``)."""
    means = {m: {key: mean_point(ps) for key, ps in pts.items()} for m, pts in points.items()}
    erm_raw = means[ERM][("off", 0.0)]
    floor = erm_raw["select"]["accuracy"] - tolerance
    out: dict = {"erm_raw": erm_raw, "select_accuracy_floor": floor, "methods": {}}
    for method, pts in means.items():
        keys = list(pts)
        front = pareto_front([(pts[k]["test"]["accuracy"], pts[k]["test"]["worst_tpr"]) for k in keys])
        pick = keys[pick_on_select([pts[k] for k in keys], floor)]
        out["methods"][method] = {
            "points": [{"value": v, "spread_weight": sw, **pts[(v, sw)]} for v, sw in keys],
            "front": [{"value": keys[i][0], "spread_weight": keys[i][1], **pts[keys[i]]["test"]} for i in front],
            "pick": {"value": pick[0], "spread_weight": pick[1], **pts[pick]}}
    erm_front = [(f["accuracy"], f["worst_tpr"]) for f in out["methods"][ERM]["front"]]
    for method, res in out["methods"].items():
        if method != ERM:
            res["matched"] = matched_gaps(res, erm_front, erm_raw["test"]["accuracy"] - tolerance)

    def picked(method: str) -> list[torch.Tensor]:
        pick = out["methods"][method]["pick"]
        return [p["test_pred"] for p in points[method][(pick["value"], pick["spread_weight"])]]

    for baseline, key in ((ERM, "vs_erm_calibrated"), *((b, f"vs_{b}") for b in versus)):
        base = picked(baseline)
        for method, res in out["methods"].items():
            res[key] = {k: paired_bootstrap(picked(method), base, labels, k) for k in ("worst_tpr", "accuracy")}
    return out


def interval(b: dict) -> str:
    """A paired-bootstrap result as ``+d [low, high]``."""
    return f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def markdown(suite: str, res: dict, meta: dict) -> str:
    """The headline table (select-chosen picks, test numbers, paired intervals) and every method's frontier."""
    lines = [f"# Frontier: {suite}", "", f"`{meta['command']}`", "", f"{meta['machine']}; {meta['wall_min']:.1f} min; "
             f"seeds {meta['seeds']}. Picks are chosen on `select`, cross-fitted (biases fitted on one half of "
             f"select, scored on the other, both ways): best select worst-class TPR with select accuracy >= raw "
             f"ERM's - {meta['tolerance']:g}: {res['select_accuracy_floor']:.4f}. Test is read only to report them.",
             "", "| method | pick (knob, spread weight) | select acc / worst (cross-fitted, chose it) | "
             "test accuracy | worst-class TPR | TPR std | Δ worst vs ERM+cal. [95 % CI] | "
             "Δ accuracy vs ERM+cal. [95 % CI] |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for method, m in res["methods"].items():
        p, b = m["pick"], m["vs_erm_calibrated"]
        ci = {k: interval(b[k]) for k in b}
        lines.append(f"| {method} | {p['value']}, {p['spread_weight']:g} | {p['select_cv']['accuracy']:.4f} / "
                     f"{p['select_cv']['worst_tpr']:.3f} | {p['test']['accuracy']:.4f} | "
                     f"{p['test']['worst_tpr']:.4f} | {p['test']['tpr_std']:.4f} | {ci['worst_tpr']} | "
                     f"{ci['accuracy']} |")
    for key in [k for k in next(iter(res["methods"].values())) if k.startswith("vs_") and k != "vs_erm_calibrated"]:
        lines += ["", f"Against {key[3:]}'s pick (paired bootstrap over test images, 95 %):", "",
                  f"| method | Δ worst vs {key[3:]} | Δ accuracy vs {key[3:]} |", "|---|---:|---:|"]
        for method, m in res["methods"].items():
            lines.append(f"| {method} | {interval(m[key]['worst_tpr'])} | {interval(m[key]['accuracy'])} |")
    lines += ["", "At matched accuracy: worst-class TPR above ERM + calibration's test frontier (linear between its "
              "points: a random mix of two models reaches that), at the pick and at the method's best point of test "
              "accuracy >= raw ERM's - the tolerance; none where ERM's frontier does not reach that accuracy:", ""]
    for method, m in res["methods"].items():
        if "matched" in m:
            at, big = m["matched"]["at_pick"], m["matched"]["largest"]
            best = "none" if big is None else (f"{big['gap'] * 100:+.1f} pp at {big['accuracy']:.4f} "
                                               f"({big['value']}, {big['spread_weight']:g})")
            lines.append(f"- **{method}**: at its pick {'none' if at is None else f'{at * 100:+.1f} pp'}; best {best}")
    lines += ["", "Frontiers (test means over seeds; non-dominated in accuracy and worst-class TPR):", ""]
    for method, m in res["methods"].items():
        pts = ", ".join(f"({f['value']}, {f['spread_weight']:g}): {f['accuracy']:.4f} / {f['worst_tpr']:.3f}"
                        for f in m["front"])
        lines.append(f"- **{method}**: {pts}")
    return "\n".join(lines) + "\n"


def plot(res: dict, title: str, path: Path) -> None:
    """Test accuracy against worst-class TPR and against TPR std: every point faint, frontiers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, (method, m) in enumerate(res["methods"].items()):
        colour = f"C{i}"
        for ax, key in zip(axes, ("worst_tpr", "tpr_std"), strict=True):
            ax.scatter([p[key] for p in (q["test"] for q in m["points"])],
                       [q["test"]["accuracy"] for q in m["points"]], s=12, alpha=0.3, color=colour)
            pts = [(q["test"]["accuracy"], q["test"][key] * (1 if key == "worst_tpr" else -1)) for q in m["points"]]
            front = sorted(pareto_front(pts), key=lambda j: pts[j][1])
            ax.plot([m["points"][j]["test"][key] for j in front], [m["points"][j]["test"]["accuracy"] for j in front],
                    "-o", ms=3, color=colour, label=method)
            pick = m["pick"]["test"]
            ax.scatter([pick[key]], [pick["accuracy"]], marker="*", s=160, color=colour, edgecolor="black", zorder=5)
    axes[0].set_xlabel("worst-class TPR (test) →")
    axes[1].set_xlabel("← TPR std over classes (test)")
    axes[1].invert_xaxis()
    for ax in axes:
        ax.set_ylabel("accuracy (test)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="★ = pick chosen on select")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="fashion_mnist", choices=list(SUITES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (each uses one CPU thread)")
    ap.add_argument("--tolerance", type=float, help="select accuracy a pick may give up vs raw ERM (default: the "
                    "suite's, TOLERANCE)")
    ap.add_argument("--tag", default="", help="suffix of the run folder and result files (e.g. subset)")
    ap.add_argument("--methods", nargs="+", help="a subset of the suite's methods (erm is always run)")
    ap.add_argument("--values", nargs="+", help="only these knob value labels (e.g. s1 s2): stage a long sweep")
    ap.add_argument("--no-train", action="store_true", help="render only what is stored or finished; leave out "
                    "(and list) the runs that would have to be trained")
    ap.add_argument("--versus", nargs="+", default=[], help="also compare every pick with these methods' picks "
                    "(e.g. ldam_drw on the long-tailed suite)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.ema_decay=0.995")
    args = ap.parse_args()
    suite = SUITES[args.suite]
    args.tolerance = TOLERANCE[args.suite] if args.tolerance is None else args.tolerance
    methods = [ERM, *[m for m in (args.methods or suite) if m != ERM]]
    unknown = (set(args.methods or []) | set(args.versus)) - set(suite)
    unknown |= set(args.values or []) - {v for m in methods for v in suite[m][1]}
    if unknown:
        ap.error(f"unknown method or knob value for suite {args.suite}: {', '.join(sorted(unknown))}")
    missing = set(args.versus) - set(methods)
    if missing:  # checked before any training, not after hours of it
        ap.error(f"--versus {' '.join(sorted(missing))}: add it to --methods")
    stem = f"frontier_{args.suite}" + (f"_{args.tag}" if args.tag else "")
    runs = ROOT / "runs" / stem
    jobs = [(m, v, s) for s in args.seeds for m in methods for v in knob_values(args.suite, m, args.values)]
    found = {j: load_record(*stored(args.suite, stem, j, args.overrides)) for j in jobs}
    todo = [j for j in jobs if found[j] is None and not (run_dir(runs, *j) / "summary.json").is_file()]
    if args.no_train and todo:
        jobs, todo = omit_untrained(jobs, todo)
    start = time.perf_counter()
    def train(job: tuple[str, str, int]) -> None:
        files, overrides = job_args(args.suite, job, args.overrides)
        train_run(run_dir(runs, *job), files, resolve_first_pass(runs, job[2], overrides))

    with ThreadPoolExecutor(args.jobs) as pool:  # ERM first: two_pass_erm reads its runs
        for batch in ([j for j in todo if j[0] == ERM], [j for j in todo if j[0] != ERM]):
            list(pool.map(train, batch))
    points, labels = collect(args.suite, stem, jobs, runs, args.overrides, found)
    res = analyse(points, labels, args.tolerance, tuple(args.versus))
    meta = {"command": " ".join(["python bench/frontier.py", *sys.argv[1:]]), "seeds": args.seeds,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, 1 torch thread per run, "
                       f"{args.jobs} at a time",
            "wall_min": (time.perf_counter() - start) / 60, "tolerance": args.tolerance}
    out = ROOT / "bench" / "results" / stem
    if not todo and out.with_suffix(".json").is_file():  # re-rendered from finished runs: keep the training time
        meta["wall_min"] = json.loads(out.with_suffix(".json").read_text())["wall_min"]
    out.with_suffix(".json").write_text(json.dumps({**meta, **res}, indent=1))
    out.with_suffix(".md").write_text(markdown(args.suite, res, meta))
    label = f"{args.suite} ({args.tag})" if args.tag else args.suite
    plot(res, f"{label}: picks chosen on select", out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
