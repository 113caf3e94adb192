"""``adaptive-lb tune``: check everything, open the study, run this machine's workers, export, retrain.

``--n-jobs K`` runs K worker *processes* (each trial is an ordinary single-process training, so results do
not depend on K); with the default storage they share the study's journal file. With G >= 1 GPUs visible,
worker i trains on GPU i mod G (``gpu_placement``: ``CUDA_VISIBLE_DEVICES`` per process). More machines join
by running the same command with the same ``--storage postgresql://...`` URL and ``--study`` name; each
process runs its own ``--trials`` share, so the study ends with exactly the sum of trials asked for.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_lb.errors import UserError
from adaptive_lb.tune import final
from adaptive_lb.tune import study as st
from adaptive_lb.tune.space import TuneSpec, load_tune_spec
from adaptive_lb.tune.storage import open_storage, redact, resolve_storage


@dataclass
class TuneOptions:
    """The command line of ``adaptive-lb tune``."""

    configs: list[str]
    overrides: list[str]
    trials: int = 0
    study: str | None = None
    storage: str | None = None
    n_jobs: int = 1
    timeout: float | None = None
    out: str | None = None
    quiet: bool = False
    final: bool = True
    final_only: bool = False


@dataclass
class Worker:
    """What one worker process needs (picklable: each process opens its own storage)."""

    spec: TuneSpec
    name: str
    url: str
    study_dir: Path
    trials: int
    index: int
    processes: int
    deadline: float | None
    env: dict[str, str] = field(default_factory=dict)  # set in the worker process before CUDA starts


def gpu_placement(n_workers: int, device: str, gpu_count: int, env: Mapping[str, str]) -> list[dict[str, str]]:
    """Environment variables per worker process: ``CUDA_VISIBLE_DEVICES`` naming one GPU, round-robin over the
    ``gpu_count`` visible ones (worker i gets the (i mod G)-th), so K workers share G GPUs evenly and each sees
    its GPU as ``cuda:0``. The visible GPUs are the parent's ``CUDA_VISIBLE_DEVICES`` entries (indices, UUIDs or
    MIG ids) when it is set, else ``0..G-1``. No GPU, or a ``train.device`` other than ``auto``/``cuda`` (a
    pinned ``cuda:N`` or the CPU): ``{}`` for every worker, the environment is left as it is.
    """
    if gpu_count < 1 or device not in ("auto", "cuda"):
        return [{} for _ in range(n_workers)]
    listed = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    visible = (listed or [str(i) for i in range(gpu_count)])[:gpu_count]
    return [{"CUDA_VISIBLE_DEVICES": visible[i % len(visible)]} for i in range(n_workers)]


def check_options(o: TuneOptions) -> None:
    if not o.configs:
        raise UserError("tune needs a config file with a tune: block, e.g. 'adaptive-lb tune "
                        "configs/tune/fashion_mnist.yaml --trials 20'")
    if o.final_only and o.trials:
        raise UserError("--final-only runs no trial: drop --trials")
    if not o.final_only and o.trials < 1:
        raise UserError(f"--trials {o.trials}: give the number of trials this process runs, >= 1")
    if o.n_jobs < 1:
        raise UserError(f"--n-jobs {o.n_jobs}: give the number of worker processes, >= 1")
    if o.n_jobs > max(1, o.trials) and not o.final_only:
        raise UserError(f"--n-jobs {o.n_jobs} is more than --trials {o.trials}: every worker needs a trial")
    if o.timeout is not None and o.timeout <= 0:
        raise UserError(f"--timeout {o.timeout}: give seconds > 0")


def _threads(spec: TuneSpec, processes: int) -> None:
    """Split the CPU cores between worker processes unless the config fixes train.threads."""
    import torch

    if processes > 1 and not spec.config(trial=True).train.threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


def work(w: Worker, view: Any, study: Any = None) -> int:
    """Run worker ``w``'s share of trials in this process (on ``study`` if already open); the number run."""
    from adaptive_lb.trainer import resolve_device

    _threads(w.spec, w.processes)
    study = study or st.open_study(w.spec, w.name, open_storage(w.url, w.spec.tune))
    # seeds differ per worker and per continuation, so a resumed random search does not repeat its points
    study.sampler = st.create_sampler(w.spec, 1009 * w.index + 7919 * len(study.trials))
    device = str(resolve_device(w.spec.config(trial=True).train.device))
    echo = [st.ViewEcho(view, "ERM reference")]
    objective = st.Objective(w.spec, w.study_dir, lambda: st.reference_value(study, w.spec, w.study_dir, echo),
                             device, view)
    return st.run_trials(study, objective, w.trials, w.deadline, w.url.startswith("journal:"),
                         lambda s: view.refresh(final.snapshot(s, w.spec)))


def _child(w: Worker, log: str) -> None:
    """Entry point of the extra worker processes: log to a file, run the share."""
    import optuna

    from adaptive_lb.progress import PlainTuneView

    os.environ.update(w.env)  # before anything touches CUDA: torch reads CUDA_VISIBLE_DEVICES when CUDA starts
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with open(log, "a", buffering=1) as fh:
        sys.stdout = sys.stderr = fh
        try:
            work(w, PlainTuneView(f"worker {w.index} (pid {os.getpid()}): {w.trials} trials", fh))
        except KeyboardInterrupt:
            print("interrupted", file=fh)


def run_tune(o: TuneOptions) -> int:
    """The whole command; 0 when the study (and final step) finished."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the view reports trials (and why one failed)
    check_options(o)
    spec = load_tune_spec(o.configs, o.overrides)
    name = o.study or "+".join(Path(p).stem for p in o.configs)
    study_dir = Path(o.out or Path("studies") / name)
    from adaptive_lb.trainer import resolve_device

    device = resolve_device(spec.config(trial=True).train.device)
    url = resolve_storage(o.storage, study_dir, o.n_jobs)
    st.dataset(spec.config(trial=True))  # missing dataset: one line, before anything is written
    study = st.open_study(spec, name, open_storage(url, spec.tune))  # unreachable storage: one line too
    study.set_user_attr(f"device:{socket.gethostname()}", str(device))
    if o.final_only:
        return finish(study, spec, study_dir, o)
    return _run_workers(study, spec, study_dir, url, o, str(device))


def _run_workers(study: Any, spec: TuneSpec, study_dir: Path, url: str, o: TuneOptions, device: str) -> int:
    import torch

    from adaptive_lb.progress import create_tune_view

    threads = torch.get_num_threads()
    _threads(spec, o.n_jobs)  # the reference below trains in this process too
    deadline = time.time() + o.timeout if o.timeout else None
    shares = [o.trials // o.n_jobs + (i < o.trials % o.n_jobs) for i in range(o.n_jobs)]
    # worker 0 is this process, already on the first visible GPU (cuda:0); the others get theirs by environment
    gpus = gpu_placement(o.n_jobs, spec.config(trial=True).train.device,
                         torch.cuda.device_count() if torch.cuda.is_available() else 0, os.environ)
    workers = [Worker(spec, study.study_name, url, study_dir, n, i, o.n_jobs, deadline, gpus[i])
               for i, n in enumerate(shares)]
    header = (f"study '{study.study_name}' in {redact(url)} · {len(study.trials)} trials so far · device {device} · "
              f"{o.n_jobs} worker process(es) · {o.trials} trials this run")
    view = create_tune_view(header, o.quiet)
    view.start()
    procs: list[Any] = []
    t0 = time.time()
    try:
        if st.enqueue_default(study, spec):
            view.note("queued the config's own values as the first trial")
        ctx = multiprocessing.get_context("spawn")
        (study_dir / "logs").mkdir(parents=True, exist_ok=True)
        for w in workers[1:]:
            procs.append(ctx.Process(target=_child, args=(w, str(study_dir / "logs" / f"worker-{w.index}.log"))))
            procs[-1].start()
        if procs:
            view.note(f"{len(procs)} more worker process(es); logs in {study_dir / 'logs'}")
        if any(gpus):
            view.note("GPUs: " + ", ".join(f"worker {i} on {g['CUDA_VISIBLE_DEVICES']}" for i, g in enumerate(gpus)))
        # this process trains the reference first (the others wait for it only at the end of their trial)
        st.reference_value(study, spec, study_dir, [st.ViewEcho(view, "ERM reference")])
        work(workers[0], view, study)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        view.stop()
        print("\nadaptive-lb: interrupted; the study keeps its trials (the running ones are queued again). "
              "Continue with the same command.", file=sys.stderr)
        return 130
    view.stop()
    torch.set_num_threads(threads)  # the final step trains one run at a time: all cores again
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        print(f"adaptive-lb: warning: {len(bad)} worker process(es) exited with {bad}; see {study_dir / 'logs'}",
              file=sys.stderr)
    study.set_user_attr("last_run", {"trials": o.trials, "processes": o.n_jobs, "wall_s": round(time.time() - t0),
                                     "device": device})
    return finish(study, spec, study_dir, o)


def finish(study: Any, spec: TuneSpec, study_dir: Path, o: TuneOptions) -> int:
    """Trial table, best.yaml, plots, then (unless ``--no-final``) the retraining on fresh seeds."""
    from adaptive_lb import report
    from adaptive_lb.progress import comparison_table, print_tables

    study_dir.mkdir(parents=True, exist_ok=True)
    plots, notes = report.write_study_plots(study, study_dir / "plots", spec.tune.mode == "multi")
    for note in notes:
        print(f"adaptive-lb: note: {note}", file=sys.stderr)
    try:
        best = final.best_trial(study, spec)
    except UserError as exc:  # the trial table and plots still say what was tried
        (study_dir / "study.md").write_text(final.study_markdown(study, spec, None, ""))
        print(f"adaptive-lb: {exc}", file=sys.stderr)
        return 1
    exported = final.export_best(study, spec, study_dir)
    print(f"best trial #{best.number}: held-out TPR variance {best.values[0]:.6f} (std {best.values[0] ** 0.5:.4f}), "
          f"held-out accuracy {best.user_attrs.get('accuracy', float('nan')):.4f}; "
          + ", ".join(f"{k}={final.fmt(v)}" for k, v in best.params.items()), flush=True)
    table = ""
    if o.final and spec.tune.final_seeds:
        paths = final.final_runs(spec, best, study_dir, _final_train)
        groups = report.group_runs([report.load_run(p) for p in paths])
        plots += report.write_comparison(groups, study_dir / "final")
        rows = report.comparison_rows(groups)
        print_tables(comparison_table(rows, report.COMPARE_KEYS))
        table = report.markdown_table(rows)
    (study_dir / "study.md").write_text(final.study_markdown(study, spec, best, table))
    for path in [*exported, *plots, study_dir / "study.md"]:
        print(f"wrote {path}", flush=True)
    print(f"train the best config with: adaptive-lb train {exported[0]}", flush=True)
    return 0


def _final_train(cfg: Any, path: Path, label: str) -> None:
    """One final run (kept if already finished), reported in one line."""
    t0 = time.time()
    done = (path / "summary.json").is_file()
    test = st.train_run(cfg, path)["test"]
    took = "kept from an earlier run" if done else f"{time.time() - t0:.0f} s"
    print(f"final {label} seed {cfg.train.seed}: test accuracy {test['accuracy']:.4f}, TPR std {test['tpr_std']:.4f}, "
          f"worst {test['worst_class']} {test['worst_tpr']:.3f} ({took})", flush=True)
