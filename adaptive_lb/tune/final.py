"""After the trials: pick the best trial, export it as a runnable config, tabulate, retrain on fresh seeds.

``best.yaml`` is the study's base config (without ``tune.trial_overrides``) with the best parameters set, fully
resolved, so ``adaptive-lb train STUDY_DIR/best.yaml`` trains it. In multi mode the exported trial is the
feasible Pareto trial with the lowest held-out TPR variance; every Pareto trial is also written to
``pareto/``. The final step retrains best, the config's own (default) controller and ERM on
``tune.final_seeds`` and compares them on the **test** split, the first time the study looks at it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from adaptive_lb.config_io import dump_config
from adaptive_lb.errors import ConfigError
from adaptive_lb.tune.space import TuneSpec


def feasible(trial: Any) -> bool:
    """Whether a finished trial passed the accuracy guard (constraints <= 0)."""
    return bool(trial.constraints) and all(v <= 0 for v in trial.constraints.values())


def best_trial(study: Any, spec: TuneSpec) -> Any:
    """The best feasible complete trial (single), or the lowest-variance feasible Pareto trial (multi)."""
    trials = pareto_front(study) if spec.tune.mode == "multi" else [
        t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)]
    if not trials:
        raise ConfigError(f"study '{study.study_name}' has no complete trial that passes the accuracy guard yet: "
                          "run more trials, or loosen tune.guard_delta")
    return min(trials, key=lambda t: (t.values[0], t.number))


def pareto_front(study: Any) -> list[Any]:
    """Feasible complete trials not dominated in (TPR variance down, balanced accuracy up)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)]

    def dominated(a: Any) -> bool:
        return any(b.values[0] <= a.values[0] and b.values[1] >= a.values[1] and b.values != a.values
                   for b in done)
    return sorted((t for t in done if not dominated(t)), key=lambda t: t.values[0])


def export_config(spec: TuneSpec, trial: Any, path: Path, study_name: str) -> Path:
    """Write the base config with ``trial``'s parameters as a runnable, fully resolved YAML file."""
    cfg = spec.config(dict(trial.params))
    header = (f"# adaptive-lb tune: study '{study_name}', trial {trial.number}, held-out TPR variance "
              f"{trial.values[0]:.6f}\n# train it with: adaptive-lb train {path}\n"
              + "".join(f"#   {k} = {v}\n" for k, v in trial.params.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + dump_config(cfg))
    return path


def export_best(study: Any, spec: TuneSpec, study_dir: Path) -> list[Path]:
    """``best.yaml`` (and ``pareto/trial-N.yaml`` in multi mode)."""
    written = [export_config(spec, best_trial(study, spec), study_dir / "best.yaml", study.study_name)]
    if spec.tune.mode == "multi":
        written += [export_config(spec, t, study_dir / "pareto" / f"trial-{t.number:04d}.yaml", study.study_name)
                    for t in pareto_front(study)]
    return written


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective value(s), held-out accuracy, guard, epochs, params, note."""
    retried = {t.system_attrs.get("failed_trial"): t.number for t in study.get_trials(deepcopy=False)
               if t.system_attrs.get("failed_trial") is not None}
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("fail_reason") or ""
        if t.state.name == "FAIL" and not note:
            note = "no heartbeat: worker killed"
        if t.state.name == "FAIL" and t.number in retried:
            note += f"; retried as #{retried[t.number]}"
        if t.state.name == "PRUNED":
            note = f"pruned after epoch {t.user_attrs.get('epoch', '?')}"
        waiting = t.state.name == "WAITING"  # a retry inherits the failed run's attrs: its epoch and reason
        if waiting:
            origin = t.system_attrs.get("failed_trial")
            note = f"queued again: the retry of #{origin}" if origin is not None else "queued"
        if t.user_attrs.get("tpr_var_per_seed"):  # a trial over several seeds: the spread behind its mean
            note += "; per seed " + " / ".join(f"{v:.6f}" for v in t.user_attrs["tpr_var_per_seed"])
        rows.append({"number": t.number, "state": t.state.name.lower(), "values": t.values or [],
                     "accuracy": t.user_attrs.get("accuracy"),
                     "feasible": feasible(t) if t.state.name == "COMPLETE" else None,
                     "epochs": 0 if waiting else t.user_attrs.get("epoch", 0), "params": dict(t.params),
                     "note": note.strip("; ")})
    return rows


def trials_markdown(study: Any, spec: TuneSpec) -> str:
    """The trial table as markdown (held-out split only)."""
    multi = spec.tune.mode == "multi"
    head = "| trial | state | held-out TPR var |" + (" balanced acc. |" if multi else "") + \
        " held-out acc. | guard | epochs | parameters | note |"
    lines = [head, "|---:|---|---:|" + ("---:|" if multi else "") + "---:|---|---:|---|---|"]
    for r in trial_rows(study):
        vals = [f"{v:.6f}" if i == 0 else f"{v:.4f}" for i, v in enumerate(r["values"])] or ["–"] * (1 + multi)
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "–"
        guard = {True: "ok", False: "fails", None: "–"}[r["feasible"]]
        params = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in r["params"].items())
        lines.append(f"| {r['number']} | {r['state']} | {' | '.join(vals)} | {acc} | {guard} | {r['epochs']} | "
                     f"{params} | {r['note']} |")
    return "\n".join(lines)


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def final_runs(spec: TuneSpec, best: Any, study_dir: Path, train: Any) -> list[Path]:
    """Retrain tuned / default / ERM on the fresh seeds (``train(cfg, path)`` trains one); their run dirs.

    Finished runs are kept, so an interrupted final step continues where it stopped. When the best trial is
    the config's own setting, ``default`` is not trained twice.
    """
    variants = {"tuned": dict(best.params), "default": None, "erm": None}
    if dict(best.params) == spec.default_values():  # tuned = default: train it once
        del variants["default"]
    paths = []
    for seed in spec.tune.final_seeds:
        for label, values in variants.items():
            cfg = spec.config(values, reference=label == "erm")
            cfg = replace(cfg, train=replace(cfg.train, seed=seed))
            path = study_dir / "final" / label / f"seed{seed}"
            train(cfg, path, label)
            paths.append(path)
    return paths


def snapshot(study: Any, spec: TuneSpec) -> dict[str, Any]:
    """What the live view shows: trial counts by state, the best trial so far, the recent trials."""
    rows = trial_rows(study)
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running",
                                                                         "waiting")}
    try:
        best = best_trial(study, spec)
        best_row = next(r for r in rows if r["number"] == best.number)
    except ConfigError:
        best_row = None
    return {"counts": counts, "total": len(rows), "best": best_row, "recent": rows[-8:],
            "reference": study.user_attrs.get("reference")}


def study_markdown(study: Any, spec: TuneSpec, best: Any, final_table: str) -> str:
    """``study.md``: settings, reference, timing, best trial, every trial, the final test comparison."""
    trials = study.get_trials(deepcopy=False)
    secs = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start)
    devices = sorted({v for k, v in study.user_attrs.items() if k.startswith("device:")})
    ref = study.user_attrs.get("reference")
    lines = [f"# Study `{study.study_name}`", "",
             f"- mode: {spec.tune.mode}; sampler {spec.tune.sampler}; pruner {spec.tune.pruner}; "
             f"objective: held-out TPR variance (test split never read by the study)",
             f"- accuracy guard: held-out {spec.tune.guard_metric} >= reference - {spec.tune.guard_delta}; reference "
             + (f"{spec.tune.reference_accuracy} (given)" if spec.tune.reference_accuracy else
                f"ERM run: accuracy {ref['accuracy']:.4f}, TPR var {ref['tpr_var']:.6f}" if ref else "not yet run"),
             f"- trials: {len(trials)}; time in trials: {secs / 60:.1f} min; device(s): {', '.join(devices) or '?'}",
             f"- trial overrides: {', '.join(spec.tune.trial_overrides) or 'none'}; seeds per trial (means): "
             f"{', '.join(map(str, spec.trial_seeds()))}"]
    if best is not None:
        lines += ["", f"## Best trial: #{best.number}", "",
                  f"held-out TPR variance {best.values[0]:.6f} (std {best.values[0] ** 0.5:.4f}), held-out "
                  f"accuracy {best.user_attrs.get('accuracy', float('nan')):.4f}", ""]
        lines += [f"- `{k}` = {v}" for k, v in best.params.items()]
        if dict(best.params) == spec.default_values():
            lines += ["", "This is the config's own setting: no trial beat it, so `tuned` below is also the default."]
    lines += ["", "## Trials", "", trials_markdown(study, spec)]
    if final_table:
        lines += ["", f"## Final comparison on the test split (seeds {list(spec.tune.final_seeds)})", "",
                  final_table]
    return "\n".join(lines) + "\n"
