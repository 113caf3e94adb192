"""Plots and comparison tables from run dirs: what users look at (the only module importing matplotlib).

One run: the normalised confusion matrix, per-class TPR bars (held-out beside test), and trajectories over
epochs of per-class held-out TPR, loss weights, augmentation intensities and logit offsets. Several runs:
grouped per-class TPR bars (one colour per run, as the seed paper's Fig. 2) and a table of accuracy,
balanced accuracy, TPR std and worst class. Runs whose configs differ only in the seed form one group,
reported as mean +- std over its seeds. A run with a post-hoc step is scored with its post-hoc biases.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adaptive_lb.errors import RunDirError
from adaptive_lb.metrics import TOP_K, extreme_classes, spread_line
from adaptive_lb.rundir import CONFIG, METRICS, SUMMARY, RunDir

DPI = 110
COMPARE_KEYS = (("accuracy", "test accuracy"), ("balanced_accuracy", "balanced acc."), ("tpr_std", "TPR std"),
                ("worst_tpr", "worst-class TPR"))


@dataclass
class Run:
    """A finished run dir, read."""

    path: Path
    config: dict         # the resolved config.yaml
    summary: dict        # summary.json
    metrics: list[dict]  # metrics.jsonl, one record per epoch

    @property
    def class_names(self) -> list[str]:
        return self.summary["class_names"]

    @property
    def label(self) -> str:
        """The run dir's name; ``<parent>`` for dirs named ``seedN`` (as bench/compare.py makes them)."""
        return self.path.parent.name if re.fullmatch(r"seed\d+", self.path.name) else self.path.name

    def block(self, split: str = "test") -> dict:
        """Final metrics of ``split``: the post-hoc corrected ones when the run has a post-hoc step."""
        return self.summary.get("posthoc", self.summary)[split]


def load_run(path: str | Path) -> Run:
    """Read a finished run dir; one clear ``RunDirError`` if it is not one or misses a file."""
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"run dir '{p}' does not exist: pass folders made by 'adaptive-lb train'")
    if not (p / CONFIG).is_file():
        raise RunDirError(f"'{p}' is not a run dir (no {CONFIG}): pass folders made by 'adaptive-lb train'")
    for name in (SUMMARY, METRICS):
        if not (p / name).is_file():
            raise RunDirError(f"'{p}' has no {name}: the run has not finished; resume it with "
                              f"'adaptive-lb train --resume {p}'")
    try:
        summary = json.loads((p / SUMMARY).read_text())
        metrics = RunDir(p).read_metrics()  # a torn last line (killed mid-write) is dropped
        config = yaml.safe_load((p / CONFIG).read_text())
        _ = summary["class_names"], summary["test"]["tpr"], summary["heldout"]["tpr"]
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise RunDirError(f"'{p}': {SUMMARY}, {METRICS} or {CONFIG} is damaged ({type(exc).__name__}: {exc}); "
                          "re-run it") from None
    if not metrics:
        raise RunDirError(f"'{p}' has an empty {METRICS}: the run recorded no epoch; re-run it")
    return Run(p, config, summary, metrics)


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs whose resolved configs differ only in ``train.seed`` (and thread count), keyed by a label."""
    groups: dict[str, list[Run]] = {}
    keys: dict[str, str] = {}
    for run in runs:
        cfg = json.loads(json.dumps(run.config))
        for k in ("seed", "threads"):
            cfg.get("train", {}).pop(k, None)
        key = json.dumps(cfg, sort_keys=True)
        if key not in keys:
            label = run.label
            while label in groups:
                label += "'"
            keys[key] = label
            groups[label] = []
        groups[keys[key]].append(run)
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def comparison_rows(groups: dict[str, list[Run]]) -> list[dict[str, Any]]:
    """One row per group: seeds, (mean, std) of each headline test metric, the worst classes seen."""
    rows = []
    for label, runs in groups.items():
        row: dict[str, Any] = {"run": label, "seeds": len(runs),
                               "posthoc": runs[0].summary.get("posthoc", {}).get("method", "")}
        for key, _ in COMPARE_KEYS:
            row[key] = mean_std([r.block()[key] for r in runs])
        row["worst_class"] = ", ".join(sorted({r.block()["worst_class"] for r in runs}))
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table (test split; post-hoc corrected where a run has it)."""
    head = "| run | seeds | " + " | ".join(name for _, name in COMPARE_KEYS) + " | worst class |"
    lines = [head, "|---|---:|" + "---:|" * len(COMPARE_KEYS) + "---|"]
    for row in rows:
        label = row["run"] + (f" (post-hoc {row['posthoc']})" if row["posthoc"] else "")
        cells = [f"{row[k][0]:.4f} ± {row[k][1]:.4f}" for k, _ in COMPARE_KEYS]
        lines.append(f"| {label} | {row['seeds']} | {' | '.join(cells)} | {row['worst_class']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def most_confused(rates: Any, k: int) -> list[int]:
    """Classes of the ``k`` largest off-diagonal entries of ``rates`` ``(C, C)`` (ties: lower flat index first),
    in order of first appearance, so the most confused pair comes first: at most ``2k`` classes."""
    import numpy as np

    off = np.array(rates, dtype=float)
    np.fill_diagonal(off, -np.inf)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    return list(dict.fromkeys(int(c) for f in flat for c in divmod(int(f), len(off))))


def plot_confusion(cm: list[list[int]], class_names: list[str], path: Path, title: str, top_k: int = TOP_K) -> Path:
    """Row-normalised confusion matrix (each row sums to 1: the diagonal is the class's TPR). More than
    ``2 top_k`` classes: only the classes of the ``top_k`` most confused (true, predicted) pairs."""
    import numpy as np

    plt = _pyplot()
    m = np.asarray(cm, dtype=float)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    if top_k and len(m) > 2 * top_k:  # a 1,000 x 1,000 image says nothing; the worst confusions do
        keep = most_confused(m, top_k)
        title = f"{title}\nthe {top_k} most confused pairs: {len(keep)} of {len(m)} classes"
        m, class_names = m[np.ix_(keep, keep)], [class_names[c] for c in keep]
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(2.2 + 0.55 * n, 1.8 + 0.5 * n))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:  # annotations stay readable up to ~20 classes
        for i in range(n):
            for j in range(n):
                if m[i, j] >= 0.005:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    return _save(fig, path)


def plot_grouped_bars(series: dict[str, tuple[list[float], list[float]]], class_names: list[str], path: Path,
                      title: str, top_k: int = TOP_K, rank: tuple[str, list[float]] | None = None) -> Path:
    """Per-class TPR bars, one colour per series; ``series`` maps label -> (means, stds) per class. More than
    ``2 top_k`` classes: the ``top_k`` lowest and highest by ``rank`` (name, values per class; default the mean
    over the series) and a line on all of them."""
    plt = _pyplot()
    what, values = rank or ("TPR, mean of the bars",
                            [sum(m[c] for m, _ in series.values()) / len(series) for c in range(len(class_names))])
    show = extreme_classes(values, top_k)
    if show is not None:
        series = {label: ([m[c] for c in show], [s[c] for c in show]) for label, (m, s) in series.items()}
        title = f"{title}\n{spread_line(values, what, top_k)}"
        class_names = [class_names[c] for c in show]
    n, k = len(class_names), len(series)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(min(14.0, max(7.0, 0.3 * n * k + 2)), 4.2))
    for i, (label, (means, stds)) in enumerate(series.items()):
        xs = [c - 0.4 + width * (i + 0.5) for c in range(n)]
        ax.bar(xs, means, width, yerr=stds if any(stds) else None, label=label, capsize=2)
    ax.set_xticks(range(n), class_names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_ylabel("TPR (recall)")
    ax.set_ylim(0, 1.2)  # room above the bars for the legend
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=min(k, 5), frameon=False)
    if show is not None:  # the lowest classes left of the line, the highest right of it
        ax.axvline(top_k - 0.5, color="grey", linestyle="--", linewidth=1)
    return _save(fig, path)


def plot_trajectories(run: Run, path: Path, top_k: int = TOP_K) -> Path:
    """Per-class held-out TPR, loss weight, augmentation intensity and logit offset over the epochs. More than
    ``2 top_k`` classes: the ``top_k`` with the lowest final held-out TPR."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in run.metrics]
    final = run.metrics[-1]["heldout"]["tpr"]
    show = extreme_classes(final, top_k)
    classes = list(range(len(run.class_names))) if show is None else show[:top_k]
    panels = (("held-out TPR", lambda r: r["heldout"]["tpr"]), ("loss weight", lambda r: r["class_weights"]),
              ("augmentation intensity", lambda r: r["aug_intensity"]), ("logit offset", lambda r: r["logit_margin"]))
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (name, get) in zip(axes.flat, panels, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(classes) > 10:  # the default cycle has 10 colours: classes 11+ would repeat them
            ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        values = [get(r) for r in run.metrics]  # (epochs, C)
        for c in classes:
            ax.plot(epochs, [v[c] for v in values], marker="o", markersize=2.5, linewidth=1.2, label=run.class_names[c])
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
    axes.flat[0].legend(fontsize=7, ncol=2)
    which = "" if show is None else f" of the {top_k} classes with the lowest final held-out TPR (of {len(final)})"
    fig.suptitle(f"{run.label}: per-class trajectories{which}")
    return _save(fig, path)


def write_run_plots(run: Run, out: Path, confusion: list[list[int]] | None = None, top_k: int = TOP_K) -> list[Path]:
    """The single-run PNGs in ``out``: confusion.png, tpr_bars.png, trajectories.png (``top_k``: how many classes
    at each end they show when there are more than ``2 top_k``; 0 = all)."""
    out.mkdir(parents=True, exist_ok=True)
    cm = confusion or run.summary.get("posthoc", run.summary).get("confusion", {}).get("test")
    written = []
    if cm is not None:
        written.append(plot_confusion(cm, run.class_names, out / "confusion.png", f"{run.label}: test confusion",
                                      top_k))
    bars = {split: (run.block(key)["tpr"], [0.0] * len(run.class_names))
            for split, key in (("held-out", "heldout"), ("test", "test"))}
    written.append(plot_grouped_bars(bars, run.class_names, out / "tpr_bars.png", f"{run.label}: per-class TPR",
                                     top_k, ("test TPR", run.block("test")["tpr"])))
    written.append(plot_trajectories(run, out / "trajectories.png", top_k))
    return written


def write_comparison(groups: dict[str, list[Run]], out: Path, top_k: int = TOP_K) -> list[Path]:
    """Grouped per-class test TPR bars and the comparison table (markdown) for several runs."""
    first = next(iter(groups.values()))[0]
    for run in (r for runs in groups.values() for r in runs):
        if run.class_names != first.class_names:
            raise RunDirError(f"'{run.path}' has other classes than '{first.path}': compare runs of one dataset")
    names = first.class_names
    out.mkdir(parents=True, exist_ok=True)
    series = {}
    for label, runs in groups.items():
        per_class = [mean_std([r.block()["tpr"][c] for r in runs]) for c in range(len(names))]
        series[f"{label} (n={len(runs)})" if len(runs) > 1 else label] = ([m for m, _ in per_class],
                                                                          [s for _, s in per_class])
    bars = plot_grouped_bars(series, names, out / "compare_tpr.png", "per-class test TPR", top_k)
    table = out / "compare.md"
    table.write_text(f"# Run comparison\n\n{markdown_table(comparison_rows(groups))}\n")
    return [bars, table]


def write_study_plots(study: Any, out: Path, multi: bool) -> tuple[list[Path], list[str]]:
    """Optimisation history, parameter importances and (multi) the Pareto front as PNGs; (written, notes).

    A plot Optuna cannot draw yet (say, importances from fewer than two complete trials) becomes a note.
    """
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return [], ["no complete trial yet: nothing to plot"]
    _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    var = {"target": (lambda t: t.values[0]), "target_name": "held-out TPR variance"} if multi else \
        {"target_name": "held-out TPR variance"}
    plots = {"optimization_history.png": lambda: ovm.plot_optimization_history(study, **var),
             "param_importances.png": lambda: ovm.plot_param_importances(study, **var)}
    if multi:
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(
            study, target_names=["held-out TPR variance", "held-out balanced accuracy"])
    written, notes = [], []
    for name, draw in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "No artists with labels")  # a legend over only infeasible trials
            try:
                ax = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes.append(f"{name}: not drawn ({exc})")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        written.append(_save(fig, out / name))
    return written, notes
