"""The Optuna side: open a study, train the ERM reference once, run trials (one worker's share).

A trial is an ordinary run dir under ``STUDY_DIR/trials/`` (so ``adaptive-lb report`` works on it), trained
with the suggested controller settings. Its objective is the TPR variance of the ``select`` split at the end of
the trial (reported every epoch for pruning): the held-out half the controller never reads; runs without a
select split fall back to the control split. The test split is never read. The accuracy guard is an Optuna
constraint on the same split: ``reference - guard_delta - select_accuracy <= 0`` is feasible.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptive_lb.callbacks import Callback
from adaptive_lb.config import RunConfig
from adaptive_lb.config_io import to_dict
from adaptive_lb.errors import ConfigError
from adaptive_lb.tune.space import TuneSpec
from adaptive_lb.tune.storage import fail_dead_local_trials, requeue, retry, worker_id

_DATA: dict[str, Any] = {}  # datasets kept per process: every trial of a study uses the same data (per seed)
_KEEP = 4  # datasets kept at most (a full Fashion-MNIST is ~55 MB: uint8 images)


def dataset(cfg: RunConfig) -> Any:
    """``build_data`` for ``cfg``, cached across trials of this process."""
    from adaptive_lb.data import build_data

    key = json.dumps([to_dict(cfg.data), cfg.train.seed], sort_keys=True)
    if key not in _DATA:
        if len(_DATA) >= _KEEP:  # a study trains few seeds: keep each one's splits, drop the oldest beyond that
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = build_data(cfg.data, cfg.train.seed)
    return _DATA[key]


def train_run(cfg: RunConfig, path: Path, callbacks: list[Callback] = ()) -> dict:
    """Train ``cfg`` into run dir ``path`` and return its summary.

    A finished run of the same config there is reused; anything else there (a run killed mid-way, or one of
    another config, say the final run of an earlier best trial) is replaced.
    """
    from adaptive_lb.config_io import dump_config
    from adaptive_lb.rundir import CONFIG, SUMMARY, RunDir, RunDirWriter
    from adaptive_lb.trainer import Trainer, resolve_config

    cfg = resolve_config(cfg, dataset(cfg))  # batch_size=auto: the run dir records the number chosen
    if (path / SUMMARY).is_file() and (path / CONFIG).read_text() == dump_config(cfg):
        return RunDir(path).read_summary()
    if path.exists():
        shutil.rmtree(path)
    run = RunDir.create(path, cfg)
    trainer = Trainer(cfg, dataset(cfg), [RunDirWriter(run), *callbacks])
    return trainer.fit()


def seed_path(path: Path, first: int, seed: int) -> Path:
    """Run dir of ``seed`` in a trial of seeds from ``first``: the first at ``path`` (what a one-seed study
    writes), the others beside it as ``<path>-seed<N>``."""
    return path if seed == first else path.with_name(f"{path.name}-seed{seed}")


def train_seeds(cfg: RunConfig, path: Path, seeds: tuple[int, ...], first: list[Callback] = (),
                rest: list[Callback] = ()) -> dict:
    """Train ``cfg`` once per seed (``first`` callbacks on the first run, ``rest`` on the others); the judged
    split's numbers averaged over the seeds, with each seed's TPR variance under ``per_seed``."""
    from dataclasses import replace

    held = []
    for seed in seeds:
        run = replace(cfg, train=replace(cfg.train, seed=seed))
        summary = train_run(run, seed_path(path, seeds[0], seed), list(first if seed == seeds[0] else rest))
        held.append(judged_split(summary))
    keys = ("accuracy", "balanced_accuracy", "tpr_std", "worst_tpr", "tpr_var")
    out = {k: sum(h[k] for h in held) / len(held) for k in keys}
    out["per_seed"] = [h["tpr_var"] for h in held]
    return out


def create_sampler(spec: TuneSpec, offset: int) -> Any:
    import optuna

    t = spec.tune
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if t.sampler == "random":
            return optuna.samplers.RandomSampler(seed=t.seed + offset)
        # constant_liar: parallel workers do not all propose the same point while trials run
        return optuna.samplers.TPESampler(seed=t.seed + offset, n_startup_trials=t.startup_trials,
                                          multivariate=True, constant_liar=True)


def create_pruner(spec: TuneSpec) -> Any:
    import optuna

    t, epochs = spec.tune, spec.config(trial=True).train.epochs
    if t.pruner == "median" and t.mode == "single":
        return optuna.pruners.MedianPruner(n_startup_trials=t.startup_trials, n_warmup_steps=t.prune_warmup_epochs)
    if t.pruner == "hyperband" and t.mode == "single":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, t.prune_warmup_epochs), max_resource=epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(spec: TuneSpec, name: str, storage: Any) -> Any:
    """Create or load study ``name``; refuse one made with another config or search space."""
    import optuna

    directions = ["minimize"] if spec.tune.mode == "single" else ["minimize", "maximize"]
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True,
                                    sampler=create_sampler(spec, 0), pruner=create_pruner(spec))
    except ValueError as exc:
        raise ConfigError(f"study '{name}' exists with other settings ({exc}): use a new --study name") from None
    made = study.user_attrs.get("fingerprint")
    if made is None:
        study.set_user_attr("fingerprint", spec.fingerprint())
        study.set_user_attr("mode", spec.tune.mode)
        study.set_user_attr("space", {k: to_dict(p) for k, p in spec.params.items()})
    elif made != spec.fingerprint():
        raise ConfigError(f"study '{name}' was made with another config, tune block or search space: use a new "
                          "--study name, or the config it was made with")
    return study


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def judged_split(result: dict) -> dict:
    """The block a study judges in an epoch record or a summary: the ``select`` split (which the controller never
    reads), or the held-out (control) split of runs without one (``data.select_fraction=0``). Raw model numbers,
    not calibrated ones: the calibration is fitted on ``select`` itself."""
    return result.get("select") or result["heldout"]


def reference_value(study: Any, spec: TuneSpec, study_dir: Path, callbacks: list[Callback] = ()) -> float:
    """The guard's reference: ``tune.reference_accuracy``, or the ERM run trained once and stored on the study."""
    t = spec.tune
    if t.reference_accuracy:
        return t.reference_accuracy
    if "reference" not in study.user_attrs:
        with _locked(study_dir / ".reference.lock"):  # one process trains it, others on the machine wait
            if "reference" not in study.user_attrs:  # read again from storage: another worker may have set it
                path = study_dir / "reference"
                cfg = spec.config(trial=True, reference=True)
                held = train_seeds(cfg, path, spec.trial_seeds(), list(callbacks), list(callbacks))
                study.set_user_attr("reference", {"accuracy": held["accuracy"], "tpr_var": held["tpr_var"],
                                                  "balanced_accuracy": held["balanced_accuracy"],
                                                  "run_dir": str(path)})
    return study.user_attrs["reference"][t.guard_metric]


def enqueue_default(study: Any, spec: TuneSpec) -> bool:
    """Queue the config's own values as the first trial of a new study (when they lie in the space)."""
    values = spec.default_values()
    if not spec.tune.enqueue_default or study.trials or study.user_attrs.get("default_enqueued"):
        return False
    if not all(spec.params[k].contains(v) for k, v in values.items()):
        return False
    study.set_user_attr("default_enqueued", True)
    study.enqueue_trial(values, user_attrs={"origin": "config default"})
    return True


class ViewEcho(Callback):
    """Shows a run that is not a trial (the ERM reference, the final retraining), or a trial's later seeds
    (``number`` given), in the study view."""

    def __init__(self, view: Any, label: str, params: dict | None = None, number: int | None = None) -> None:
        self.view, self.label, self.params, self.number = view, label, params or {}, number

    def on_fit_start(self, trainer: Any) -> None:
        self.view.trial_start(self.label, self.params, trainer.total_epochs, self.number)

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        self.view.trial_epoch(record)


class TrialReporter(Callback):
    """Reports held-out TPR variance every epoch (single mode) and prunes when the pruner says so."""

    def __init__(self, trial: Any, multi: bool, view: Any) -> None:
        self.trial, self.multi, self.view = trial, multi, view

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        import optuna

        value, epoch = judged_split(record)["tpr_var"], record["epoch"]
        self.trial.set_user_attr("epoch", epoch)
        self.view.trial_epoch(record)
        if not self.multi:
            self.trial.report(value, epoch)
            if epoch < trainer.total_epochs and self.trial.should_prune():  # a finished trial completes
                raise optuna.TrialPruned(f"held-out TPR variance {value:.5f} at epoch {epoch}")


class Objective:
    """Train one trial's config; return held-out TPR variance (and balanced accuracy in multi mode)."""

    def __init__(self, spec: TuneSpec, study_dir: Path, reference: Callable[[], float], device: str,
                 view: Any) -> None:
        self.spec, self.study_dir, self.reference, self.device, self.view = spec, study_dir, reference, device, view
        self.interrupted: int | None = None

    def __call__(self, trial: Any) -> float | tuple[float, float]:
        t = self.spec.tune
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("fail_reason", "")  # a retried trial inherits the reason of the one it replaces
        trial.set_user_attr("device", self.device)
        values = {name: p.suggest(trial) for name, p in self.spec.params.items()}
        path = self.study_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(path))
        try:
            cfg = self.spec.config(values, trial=True)
            self.view.trial_start(f"trial {trial.number}", values, cfg.train.epochs, trial.number)
            reporter = TrialReporter(trial, t.mode == "multi", self.view)
            # pruning reads the first seed's epochs; the others train only once it has survived them
            echo = ViewEcho(self.view, f"trial {trial.number}, next seed", values, trial.number)
            held = train_seeds(cfg, path, self.spec.trial_seeds(), [reporter], [echo])
        except KeyboardInterrupt:
            self.interrupted = trial.number
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as exc:
            import optuna

            if not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise
        for key in ("accuracy", "balanced_accuracy", "tpr_std", "worst_tpr"):
            trial.set_user_attr(key, held[key])
        if len(held["per_seed"]) > 1:
            trial.set_user_attr("tpr_var_per_seed", held["per_seed"])
        # read at the end of the trial: workers start trials while the first process trains the reference
        trial.set_constraint("accuracy_guard", self.reference() - t.guard_delta - held[t.guard_metric])
        return held["tpr_var"] if t.mode == "single" else (held["tpr_var"], held["balanced_accuracy"])


def run_trials(study: Any, objective: Objective, n_trials: int, deadline: float | None, journal: bool,
               after_trial: Callable[[Any], None]) -> int:
    """Run up to ``n_trials`` trials (stopping at ``deadline``, a ``time.time()``); the number run."""
    import optuna

    done = 0
    while done < n_trials and (deadline is None or time.time() < deadline):
        if journal:  # no heartbeat in the journal file: look for dead workers of this machine instead
            fail_dead_local_trials(study, objective.spec.tune.retries)
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except KeyboardInterrupt:
            if objective.interrupted is not None:  # queue the interrupted trial again for the next run
                trial = study.get_trials(deepcopy=False)[objective.interrupted]
                if trial.state == optuna.trial.TrialState.RUNNING:
                    requeue(study, trial, "interrupted", objective.spec.tune.retries)
                else:  # Optuna already marked it failed
                    retry(study, trial, objective.spec.tune.retries)
            raise
        done += 1
        after_trial(study)
    return done

