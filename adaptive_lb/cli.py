"""``adaptive-lb``: train, tune, eval, report, fetch.

Bad input (config, data, run dir) ends with one line on stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_lb.errors import ConfigWarning, NonFiniteLossError, RunDirError, UserError

PROG = "adaptive-lb"


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def is_main() -> bool:
    """Rank 0 of a torchrun job, or a single process: the one that prints (no torch import: ``--help`` stays fast)."""
    return os.environ.get("RANK", "0") in ("0", "")


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


class OtherRankError(UserError):
    """Another process of a multi-process run stopped on bad input (it printed nothing: only rank 0 speaks)."""


def _train_config(args: argparse.Namespace) -> tuple:
    """(configs, overrides, cfg, run or None) of ``train``; bad input raises before anything is written."""
    from adaptive_lb.config import load_config
    from adaptive_lb.rundir import RunDir, resume_config

    configs = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if args.resume:
        if configs or args.out:
            raise RunDirError("--resume continues a run with its own config.yaml: drop the config file(s) and "
                              "--out (only train.device, train.threads and train.loggers may be given)")
        run = RunDir.open(args.resume)
        if run.has_summary():
            raise RunDirError(f"'{run.path}' has finished (summary.json written): nothing to resume; "
                              f"see '{PROG} eval {run.path}' or '{PROG} report {run.path}'")
        return configs, overrides, resume_config(run.config(), overrides), run
    if not configs:
        raise UserError("train needs a config file, e.g. 'adaptive-lb train configs/fashion_mnist.yaml'")
    return configs, overrides, load_config(configs, overrides), None


def cmd_train(args: argparse.Namespace) -> int:
    """Train from a config (plus dotted overrides), or continue a run with ``--resume``; ``--nproc N`` (or
    torchrun) trains in N processes, rank 0 writing the run dir."""
    from adaptive_lb import distributed as ddp
    from adaptive_lb.config import dump_config

    launcher = args.nproc > 1 and ddp.env_world_size() == 1
    with warnings.catch_warnings():
        if launcher:  # its rank 0 shows the config's warnings: once, not twice
            warnings.simplefilter("ignore", ConfigWarning)
        configs, _, cfg, run = _train_config(args)
    if args.print_config:
        if ddp.is_main():
            print(dump_config(cfg), end="", flush=True)
        return 0
    if launcher:
        return _launch(args, configs)
    ddp.init_distributed(cfg.train.device)  # torchrun's WORLD_SIZE > 1: join the process group
    try:
        return _train(args, configs, cfg, run)
    finally:
        ddp.teardown()


def _launch(args: argparse.Namespace, configs: list[str]) -> int:
    """``--nproc N``: the same command in N processes (torchrun), after this process checked the run dir."""
    from adaptive_lb.distributed import launch
    from adaptive_lb.rundir import default_run_dir, refuse_non_empty

    argv = _without_nproc(args.argv)
    if not args.resume:
        path = Path(args.out or default_run_dir(configs))
        refuse_non_empty(path)
        if not args.out:  # every rank names the same run dir
            argv += ["--out", str(path)]
    return launch(args.nproc, argv)


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the processes it starts are the N)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        skip = a == "--nproc"
        if not skip:
            out.append(a)
    return out


def _train(args: argparse.Namespace, configs: list[str], cfg, run) -> int:
    """Build data, trainer and run dir, then fit; under several processes the ranks agree that setup worked."""
    from adaptive_lb import distributed as ddp
    from adaptive_lb.data import build_data
    from adaptive_lb.integrations import create_loggers
    from adaptive_lb.progress import create_progress
    from adaptive_lb.rundir import RunDir, RunDirWriter, default_run_dir, refuse_non_empty
    from adaptive_lb.trainer import Trainer

    main_rank, failed = ddp.is_main(), None
    try:  # everything that can fail on bad input happens before the run dir is written
        state = run.load_checkpoint() if run is not None else None
        data = build_data(cfg.data, cfg.train.seed)
        path = run.path if run is not None else Path(args.out or default_run_dir(configs))
        if main_rank and run is None:
            refuse_non_empty(path)
        # a missing package fails here, before anything is written; only rank 0 logs
        loggers = create_loggers(cfg.train.loggers, path) if main_rank else []
    except UserError as exc:
        failed = exc
    if not ddp.all_agree(failed is None):  # one rank's bad input must not leave the others waiting
        raise failed or OtherRankError("another process of this run stopped on bad input: run it without "
                                        "--nproc to see why")
    trainer = Trainer(cfg, data)  # trainer.cfg: batch_size=auto resolved, as config.yaml records it
    if state is not None:
        trainer.load_state_dict(state)
        if main_rank:
            run.trim_metrics(trainer.epoch)
            if trainer.cfg != run.config():
                run.write_config(trainer.cfg)  # the run now goes on under these settings: config.yaml says so
            _warn_if_not_bitwise(state, trainer)
    elif main_rank:
        run = RunDir.create(path, trainer.cfg)
    if not main_rank:  # the other ranks train and stay quiet; rank 0 reports a NaN loss or Ctrl-C
        try:
            trainer.fit()
        except NonFiniteLossError:
            return 1
        except KeyboardInterrupt:
            return 130
        return 0
    _notes(data.notes, cfg, trainer)  # after the last check: bad input stays one line
    trainer.callbacks = [RunDirWriter(run), create_progress(args.quiet, top_k=args.top_k), *loggers]
    return _fit(trainer, run, plots=not args.no_plots, top_k=args.top_k)


def _notes(notes: Sequence[str], cfg, trainer) -> None:
    """The data loader's notes and the batch size ``auto`` chose, one ``adaptive-lb: note:`` line each."""
    if cfg.train.batch_size == "auto":
        from adaptive_lb.data.samplers import epoch_size

        images = epoch_size(trainer.data.train.y, trainer.data.num_classes, cfg.data.sampler)
        notes = [*notes, f"train.batch_size=auto -> {trainer.cfg.train.batch_size} ({images:,} training images "
                         f"per epoch, {len(trainer.train_loader)} steps)"]
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr, flush=True)


def _warn_if_not_bitwise(state: dict, trainer) -> None:
    """One line when the resumed process differs from the one that wrote the checkpoint (threads, device)."""
    import torch

    then = {"CPU threads": state.get("threads"), "device": state.get("device")}
    now = {"CPU threads": torch.get_num_threads(), "device": str(trainer.device)}
    changed = [f"{k} {then[k]} -> {now[k]}" for k in then if then[k] is not None and then[k] != now[k]]
    if changed:
        _warn(f"resuming with {', '.join(changed)}: the run goes on, but its results may differ in the last "
              "digits from an uninterrupted run (bit-for-bit equality needs the same device and threads)")


def _fit(trainer, run, plots: bool, top_k: int) -> int:
    """Run ``trainer.fit()`` into ``run``: exit 130 on Ctrl-C, 1 on a NaN loss or a failed write mid-run."""
    from adaptive_lb.errors import WriteError

    try:
        trainer.fit()
    except KeyboardInterrupt:
        if run.checkpoint_epoch:
            what = f"checkpoint of epoch {run.checkpoint_epoch} kept; continue with: {PROG} train --resume {run.path}"
        else:
            what = f"no epoch finished, nothing to resume in {run.path}"
        print(f"\n{PROG}: interrupted; {what}", file=sys.stderr, flush=True)
        return 130
    except (NonFiniteLossError, WriteError) as exc:
        saved = run.checkpoint_epoch
        kept = f"checkpoint of epoch {saved} kept" if saved else "no checkpoint yet"
        fix = "lower optim.lr or check the data" if isinstance(exc, NonFiniteLossError) else (
            f"then continue with: {PROG} train --resume {run.path}" if saved else "then start again")
        _fail(f"{exc}; run stopped ({kept} in {run.path}): {fix}")
        return 1
    if plots:
        from adaptive_lb.report import load_run, write_run_plots

        written = write_run_plots(load_run(run.path), run.path / "plots", top_k=top_k)
        print(f"plots: {', '.join(str(p) for p in written)}", flush=True)
    print(f"run dir: {run.path}", flush=True)
    return 0


def _restored_trainer(path, device: str | None = None):
    """The run dir at ``path`` and a trainer holding its checkpoint (model, controller, counters)."""
    from dataclasses import replace

    from adaptive_lb.data import build_data
    from adaptive_lb.rundir import RunDir
    from adaptive_lb.trainer import Trainer

    run = RunDir.open(path)
    cfg, state = run.config(), run.load_checkpoint()
    if device:
        cfg = replace(cfg, train=replace(cfg.train, device=device))
    trainer = Trainer(cfg, build_data(cfg.data, cfg.train.seed))
    trainer.load_state_dict(state)
    return run, trainer


def cmd_eval(args: argparse.Namespace) -> int:
    """Per-class report of a finished (or checkpointed) run on one of its splits: a table, JSON, predictions."""
    import json

    import torch

    from adaptive_lb.metrics import confusion_matrix, summarize
    from adaptive_lb.progress import print_tables, report_table
    from adaptive_lb.rundir import write_predictions

    run, trainer = _restored_trainer(args.run_dir, args.device)
    names = trainer.data.class_names
    posthoc = run.read_summary().get("posthoc") if run.has_summary() and not args.raw else None
    bias = torch.tensor(posthoc["bias"]) if posthoc else torch.zeros(len(names))
    logits, labels = trainer.logits(args.split)  # (N, C) float32, (N,)
    pred = (logits + bias).argmax(dim=1)
    cm = confusion_matrix(labels, pred, len(names))
    block = summarize(cm, names, args.split)
    if args.predictions:
        write_predictions(args.predictions, labels, pred, logits, names)
    if args.json:
        print(json.dumps({"run": str(run.path), "split": args.split, "epoch": trainer.epoch,
                          "posthoc": posthoc["method"] if posthoc else None, "bias": bias.tolist(),
                          "class_names": list(names), **block, "confusion": cm.tolist()}, indent=2), flush=True)
        return 0
    title = f"{run.path}: {args.split} split, epoch {trainer.epoch}"
    if posthoc:
        title += f", post-hoc {posthoc['method']} biases (--raw for the model alone)"
    print_tables(report_table(block, names, title, args.top_k))
    if args.predictions:
        print(f"wrote {args.predictions}", flush=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """PNG plots of one run, or grouped bars and a comparison table of several (seeds aggregated)."""
    import time

    from adaptive_lb import report
    from adaptive_lb.progress import comparison_table, print_tables

    runs = [report.load_run(p) for p in args.run_dirs]  # every run is checked before anything is written
    groups = report.group_runs(runs)
    if len(runs) == 1:
        out = Path(args.out) if args.out else runs[0].path / "plots"
        written = report.write_run_plots(runs[0], out, _confusion_if_missing(runs[0]), args.top_k)
    else:
        out = Path(args.out) if args.out else Path("reports") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        written = report.write_comparison(groups, out, args.top_k)
    print_tables(comparison_table(report.comparison_rows(groups), report.COMPARE_KEYS))
    for path in written:
        print(f"wrote {path}", flush=True)
    return 0


def _confusion_if_missing(run) -> list | None:
    """Runs made before summaries held confusion matrices: recompute it from the checkpoint."""
    import torch

    if "confusion" in run.summary.get("posthoc", run.summary):
        return None
    _, trainer = _restored_trainer(run.path)
    bias = run.summary.get("posthoc", {}).get("bias")
    print(f"{PROG}: note: {run.path} has no confusion matrix in its summary; recomputed from its checkpoint",
          file=sys.stderr)
    return trainer.confusion("test", torch.tensor(bias) if bias else None).tolist()


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna study of the controller: minimise held-out TPR variance under an accuracy guard."""
    from adaptive_lb.tune.runner import TuneOptions, run_tune

    return run_tune(TuneOptions(
        configs=[a for a in args.args if "=" not in a], overrides=[a for a in args.args if "=" in a],
        trials=args.trials, study=args.study, storage=args.storage, n_jobs=args.n_jobs, timeout=args.timeout,
        out=args.dir, quiet=args.quiet, final=not args.no_final, final_only=args.final_only))


def cmd_fetch(args: argparse.Namespace) -> int:
    """Make a dataset available under ``--root`` (downloads with torchvision when files are missing)."""
    from adaptive_lb.config import DataConfig
    from adaptive_lb.data.datasets import load_dataset

    raw = load_dataset(DataConfig(name=args.dataset, root=args.root, download=args.download), seed=0)
    unit = "names" if args.dataset == "names" else "images"
    print(f"{args.dataset}: {len(raw.y_train)} train and {len(raw.y_test)} test {unit}, "
          f"{len(raw.class_names)} classes", flush=True)
    return 0


def _top_k(parser: argparse.ArgumentParser) -> None:
    from adaptive_lb.metrics import TOP_K

    parser.add_argument("--top-k", type=int, default=TOP_K, metavar="K",
                        help=f"with more than 2K classes, per-class tables and plots show the K lowest and K highest "
                             f"TPR and a line on all classes (default {TOP_K}; 0 = every class)")


def build_parser() -> argparse.ArgumentParser:
    from adaptive_lb import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="Even per-class TPR by closed-loop training.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model from a YAML config")
    train.add_argument("args", nargs="*", metavar="CONFIG|KEY=VALUE",
                       help="YAML config(s), merged left to right (e.g. configs/fashion_mnist_lt100.yaml "
                            "configs/methods/ldam_drw.yaml), then dotted overrides (e.g. train.epochs=3)")
    train.add_argument("--out", help="run dir (default runs/<config>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run (train.device=... and train.threads=... may be given)")
    train.add_argument("--quiet", action="store_true", help="plain log lines instead of the live display")
    train.add_argument("--no-plots", action="store_true", help="skip the PNG plots written at the end")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train in N processes on this machine (DDP via torchrun; one GPU each on CUDA, gloo on "
                            "the CPU); train.batch_size stays the global batch")
    train.add_argument("--print-config", action="store_true",
                       help="print the fully resolved config (YAML) and exit; nothing is trained or written")
    _top_k(train)
    train.set_defaults(func=cmd_train)
    tune = sub.add_parser("tune", help="Optuna study of the controller (held-out TPR variance, accuracy guard)")
    tune.add_argument("args", nargs="*", metavar="CONFIG|KEY=VALUE",
                      help="YAML config(s) with a tune: block (e.g. configs/tune/fashion_mnist.yaml), then dotted "
                           "overrides (e.g. tune.pruner=hyperband)")
    tune.add_argument("--trials", type=int, default=0, help="trials this command runs (split over --n-jobs)")
    tune.add_argument("--study", help="study name (default: the config file names)")
    tune.add_argument("--storage", help="sqlite | journal | FILE.db | FILE.log | postgresql://USER@HOST/DB "
                                        "(default: a file in the study folder)")
    tune.add_argument("--n-jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    tune.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    tune.add_argument("--dir", help="study folder (default studies/<study>)")
    tune.add_argument("--quiet", action="store_true", help="plain log lines instead of the live view")
    tune.add_argument("--no-final", action="store_true", help="skip retraining best/default/ERM on fresh seeds")
    tune.add_argument("--final-only", action="store_true", help="no new trials: export and retrain the best")
    tune.set_defaults(func=cmd_tune)
    ev = sub.add_parser("eval", help="per-class report of a run")
    ev.add_argument("run_dir")
    ev.add_argument("--split", choices=("test", "heldout", "select", "train"), default="test")
    ev.add_argument("--raw", action="store_true", help="ignore the run's post-hoc biases")
    ev.add_argument("--json", action="store_true", help="print the report as JSON (machine-readable) instead")
    ev.add_argument("--predictions", metavar="FILE",
                    help="write a CSV: per sample its index, true and predicted class, and the raw logits")
    ev.add_argument("--device", help="evaluate on this device instead of the run's train.device (e.g. cpu)")
    _top_k(ev)
    ev.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="plots of a run; grouped bars and a table for several")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", help="folder for the PNGs (default RUN_DIR/plots, or reports/compare-<time>)")
    _top_k(rep)
    rep.set_defaults(func=cmd_report)
    fetch = sub.add_parser("fetch", help="check or download a dataset")
    fetch.add_argument("dataset", choices=("fashion_mnist", "cifar10", "cifar100", "names"))
    fetch.add_argument("--root", default="data", help="folder for the files (default ./data)")
    fetch.add_argument("--download", action="store_true", help="download with torchvision if missing")
    fetch.set_defaults(func=cmd_fetch)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: a ConfigWarning prints as one ``adaptive-lb: warning:`` line."""
    if issubclass(category, ConfigWarning):
        _warn(str(message))
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv  # `train --nproc N` hands the same arguments to its N processes
    # overrides may follow options too: `train cfg.yaml --quiet train.epochs=3`
    if extra and args.command in ("train", "tune") and all("=" in a and not a.startswith("-") for a in extra):
        args.args = [*args.args, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with warnings.catch_warnings():  # a ConfigWarning is one line, like the errors
            warnings.simplefilter("default" if is_main() else "ignore", ConfigWarning)  # rank 0 alone speaks
            warnings.showwarning = _show_warning
            return args.func(args)
    except UserError as exc:
        if is_main():  # several processes: rank 0 alone says it (the others failed alike, or told it so)
            _fail(str(exc))
        return 2
    except KeyboardInterrupt:
        if is_main():
            print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``adaptive-lb`` command and ``python -m adaptive_lb``: :func:`main`, then exit with its code (a
    process of a multi-process run exits without the interpreter's clean-up: ``distributed.exit_process``)."""
    from adaptive_lb.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
