"""The run directory: resolved config, per-epoch metrics, checkpoint, summary.

Layout::

    config.yaml      the fully resolved RunConfig (every field)
    metrics.jsonl    one JSON line per completed epoch
    checkpoint.pt    trainer state after the last completed epoch (written atomically)
    model.pt         the shipped model: weights, input normalisation, calibration biases (adaptive_lb/export.py)
    summary.json     final held-out and test metrics, written when the run finishes

The checkpoint is written after the metrics line, so after a crash ``metrics.jsonl`` may hold one epoch
more than the checkpoint, or a torn last line (killed mid-write, disk full); ``resume`` trims it back to what
the checkpoint covers, and the epoch is redone identically.

Checkpoints hold tensors and plain containers only, and are loaded with ``weights_only=True``: a run dir
from elsewhere cannot execute code on load. Every file is written through ``atomic_write``; a write that
fails (disk full, permission denied) raises ``WriteError`` naming the path, and the previous file stays.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from adaptive_lb.callbacks import Callback
from adaptive_lb.config import RunConfig, apply_override, dump_config, from_dict, load_config, to_dict
from adaptive_lb.errors import ConfigWarning, RunDirError, WriteError

CONFIG, METRICS, CHECKPOINT, SUMMARY = "config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"
# what Trainer.state_dict() writes and load_state_dict() needs ("data" and "threads" are checked when present)
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "controller", "action", "last_record",
                   "pass_summaries")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, fsync it, rename it over ``path``, fsync the folder.

    Readers see the old file or the new one, never a part. An ``OSError`` (disk full, permission denied,
    read-only file system) becomes a one-line ``WriteError`` naming ``path``; the old file is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run dir or cache is as readable as any file
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself is already atomic
        pass
    finally:
        os.close(fd)


def write_error(path: Path, exc: OSError) -> WriteError:
    """A one-line error naming the file, the reason and what to do."""
    reason = exc.strerror or type(exc).__name__
    fix = {errno.ENOSPC: "free disk space, or write elsewhere", errno.EDQUOT: "free disk space, or write elsewhere",
           errno.ENOENT: "its folder does not exist: create it or choose another path",
           errno.EACCES: "fix the folder's permissions, or write elsewhere",
           errno.EPERM: "fix the folder's permissions, or write elsewhere",
           errno.EROFS: "the file system is read-only: write elsewhere"}.get(exc.errno, "check the disk and folder")
    return WriteError(f"cannot write '{path}' ({reason}): {fix}")


RESUMABLE_KEYS = ("train.device", "train.threads", "train.loggers")  # machine and logging, not the experiment


def resume_config(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """The run's config with the overrides ``--resume`` accepts (``RESUMABLE_KEYS``); any other key is refused."""
    raw = to_dict(cfg)
    for item in overrides:
        key = item.partition("=")[0]
        if key not in RESUMABLE_KEYS:
            raise RunDirError(f"--resume cannot change {key}: it would change the experiment (only "
                              f"{', '.join(RESUMABLE_KEYS)} may change); start a new run with --out instead")
        apply_override(raw, item)
    with warnings.catch_warnings():  # shown when the run was created
        warnings.simplefilter("ignore", ConfigWarning)
        return from_dict(RunConfig, raw)


def write_predictions(path: str | Path, labels: torch.Tensor, pred: torch.Tensor, logits: torch.Tensor,
                      class_names: Sequence[str]) -> None:
    """CSV, one row per sample of the split in its order: ``index,label,predicted,logit_<class>...``.

    ``labels``/``pred`` ``(N,)`` class indices (names in the header's ``logit_`` columns), ``logits`` ``(N, C)``
    the model's raw logits (before any post-hoc bias; ``predicted`` includes it unless ``eval --raw``).
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["index", "label", "label_name", "predicted", "predicted_name",
                  *(f"logit_{name}" for name in class_names)])
    for i, (y, p, z) in enumerate(zip(labels.tolist(), pred.tolist(), logits.tolist(), strict=True)):
        out.writerow([i, y, class_names[y], p, class_names[p], *(f"{v:.6g}" for v in z)])
    atomic_write(Path(path), lambda fh: fh.write(buf.getvalue().encode()))


def default_run_dir(config_paths: str | Path | list[str]) -> Path:
    """``runs/<config stems joined by +>-<timestamp>``."""
    paths = [config_paths] if isinstance(config_paths, (str, Path)) else config_paths
    stem = "+".join(Path(p).stem for p in paths)
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def refuse_non_empty(path: Path) -> None:
    """``RunDirError`` when ``path`` exists and is not an empty folder: a new run never overwrites one."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(f"'{path}' already exists and is not empty: choose another --out, "
                          f"or continue it with --resume {path}")


class RunDir:
    """Reads and writes one run's files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint_epoch: int | None = None  # epoch of the checkpoint last written or read here

    @classmethod
    def create(cls, path: str | Path, cfg: RunConfig) -> RunDir:
        """Make a fresh run dir holding ``config.yaml``; refuses to reuse a non-empty folder."""
        run = cls(path)
        refuse_non_empty(run.path)
        created = not run.path.exists()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(cfg)
            (run.path / METRICS).touch()
        except (OSError, WriteError) as exc:
            if created:  # nothing half-written is left behind
                shutil.rmtree(run.path, ignore_errors=True)
            raise exc if isinstance(exc, WriteError) else write_error(run.path, exc) from None
        return run

    @classmethod
    def open(cls, path: str | Path, need_checkpoint: bool = True) -> RunDir:
        """An existing run dir; a clear error if it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"run dir '{run.path}' does not exist: pass a folder made by 'adaptive-lb train'")
        if not (run.path / CONFIG).is_file():
            raise RunDirError(f"'{run.path}' is not a run dir (no {CONFIG}): pass a folder made by "
                              "'adaptive-lb train'")
        if need_checkpoint and not (run.path / CHECKPOINT).is_file():
            raise RunDirError(f"'{run.path}' has no {CHECKPOINT} (no epoch finished): start a new run instead")
        return run

    def config(self) -> RunConfig:
        """The run's saved config; its ConfigWarnings were shown when the run was created, not again here."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            return load_config(self.path / CONFIG)

    def append_metrics(self, record: dict) -> None:
        """Append one epoch's line (flushed and fsynced: the checkpoint written next must not outlive it)."""
        path = self.path / METRICS
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise write_error(path, exc) from None

    def read_metrics(self) -> list[dict]:
        """The epoch records, up to the first line that does not parse (a torn tail is dropped)."""
        path = self.path / METRICS
        if not path.exists():
            return []
        records = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill or a full disk: it and anything after it are not trusted
            if not isinstance(record, dict):
                break
            records.append(record)
        return records

    def trim_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` records (those the checkpoint covers), dropping any torn tail."""
        keep = self.read_metrics()[:epochs]
        atomic_write(self.path / METRICS, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in keep).encode()))

    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.path / CHECKPOINT, lambda fh: torch.save(state, fh))
        self.checkpoint_epoch = state["epoch"]

    def load_checkpoint(self) -> dict:
        """The trainer state of the last finished epoch; a damaged or foreign file is a one-line error.

        ``weights_only=True``: only tensors and plain containers are unpickled, never code.
        """
        path = self.path / CHECKPOINT
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RunDirError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: damaged, or not made "
                              "by adaptive-lb): start a new run") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise RunDirError(f"checkpoint '{path}' lacks {', '.join(missing)} (damaged, or made by another "
                              "program): start a new run")
        self.checkpoint_epoch = state["epoch"]
        return state

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write(self.path / CONFIG, lambda fh: fh.write(dump_config(cfg).encode()))

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / SUMMARY, lambda fh: fh.write(json.dumps(summary, indent=2).encode()))

    def has_summary(self) -> bool:
        return (self.path / SUMMARY).is_file()

    def read_summary(self) -> dict:
        path = self.path / SUMMARY
        if not path.is_file():
            raise RunDirError(f"'{self.path}' has no {SUMMARY}: the run has not finished; resume it with "
                              f"'adaptive-lb train --resume {self.path}'")
        return json.loads(path.read_text())


class RunDirWriter(Callback):
    """Writes a metrics line and the checkpoint after every epoch, and the summary at the end."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        self.run.append_metrics(record)
        self.run.save_checkpoint(trainer.state_dict())

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        from adaptive_lb.export import MODEL, model_state

        bias = summary.get("posthoc", {}).get("bias")
        model = getattr(trainer, "eval_model", trainer.model)  # the model that was evaluated and reported
        state = model_state(model, trainer.cfg.model, trainer.data, bias)
        atomic_write(self.run.path / MODEL, lambda fh: torch.save(state, fh))
        self.run.write_summary({**summary, "config": str(self.run.path / CONFIG)})  # last: it marks "finished"
