"""The run directory: resolved config, per-epoch metrics, checkpoint, summary.

Layout::

    config.yaml      the fully resolved RunConfig (every field)
    metrics.jsonl    one JSON line per completed epoch
    checkpoint.pt    trainer state after the last completed epoch (written atomically)
    summary.json     final held-out and test metrics, written when the run finishes

The checkpoint is written after the metrics line, so after a crash ``metrics.jsonl`` may hold one epoch
more than the checkpoint; ``resume`` trims it back, and the epoch is redone identically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from adaptive_lb.callbacks import Callback
from adaptive_lb.config import RunConfig, dump_config, load_config
from adaptive_lb.errors import RunDirError

CONFIG, METRICS, CHECKPOINT, SUMMARY = "config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_run_dir(config_paths: str | Path | list[str]) -> Path:
    """``runs/<config stems joined by +>-<timestamp>``."""
    paths = [config_paths] if isinstance(config_paths, (str, Path)) else config_paths
    stem = "+".join(Path(p).stem for p in paths)
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """Reads and writes one run's files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, cfg: RunConfig) -> RunDir:
        """Make a fresh run dir holding ``config.yaml``; refuses to reuse a non-empty folder."""
        run = cls(path)
        if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            raise RunDirError(f"'{run.path}' already exists and is not empty: choose another --out, "
                              f"or continue it with --resume {run.path}")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write(run.path / CONFIG, lambda fh: fh.write(dump_config(cfg).encode()))
        (run.path / METRICS).touch()
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
        return load_config(self.path / CONFIG)

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def trim_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` lines (those the checkpoint covers)."""
        keep = self.read_metrics()[:epochs]
        atomic_write(self.path / METRICS, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in keep).encode()))

    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.path / CHECKPOINT, lambda fh: torch.save(state, fh))

    def load_checkpoint(self) -> dict:
        try:
            return torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise RunDirError(f"checkpoint '{self.path / CHECKPOINT}' cannot be read ({type(exc).__name__}): "
                              "start a new run") from None

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
        self.run.write_summary({**summary, "config": str(self.run.path / CONFIG)})
