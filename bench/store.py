"""The committed store of ``frontier.py``: each finished run's calibration sweep (gzip, ~30 KB a run) in
``bench/results/frontier_runs/<stem>/<method>/<value>/seed<N>.pt.gz``, keyed by the resolved config it was
trained with, so that a later session, on a machine without ``runs/``, re-renders a benchmark and extends it
without retraining, and a record made with other settings (a config file or a default edited since) is never
read as the run asked for."""

from __future__ import annotations

import dataclasses
import gzip
import io
from pathlib import Path

import torch
from suites import FIRST_PASS_FROM_ERM

from adaptive_lb.config import RunConfig, load_config
from adaptive_lb.config_io import to_dict
from adaptive_lb.controllers import as_built

REPO = Path(__file__).resolve().parents[1]  # the suites' config paths are relative to it
STORE = REPO / "bench" / "results" / "frontier_runs"
# resolved-config keys (and sections) that cannot change a run's sweep, left out of its record's key: where files
# live, what is logged and when, and the post-hoc ending (the sweep fits its own biases at fixed spread weights);
# the thread count (train_run sets 1) and two_pass_erm's first-pass TPR (read from the seed's ERM run, keyed itself)
UNKEYED = ("name", "posthoc", "data.root", "data.download", "data.cache_dir", "data.memory_limit_gb",
           "train.eval_batch_size", "train.log_every", "train.loggers", "train.test_every", "train.raw_every",
           "train.threads", "controller.first_pass_tpr")


def record_path(stem: str, method: str, value: str, seed: int) -> Path:
    return STORE / stem / method / value / f"seed{seed}.pt.gz"


def flat(tree: dict, prefix: str = "") -> dict:
    """A nested mapping as ``{dotted.key: leaf}``."""
    out: dict = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def keyed(cfg: RunConfig) -> dict:
    """A resolved config as ``{dotted.key: value}``, its controller section as the controller reads it
    (``controllers.as_built``), less UNKEYED: what a stored record is keyed by."""
    tree = to_dict(dataclasses.replace(cfg, controller=as_built(cfg.controller)))
    return {k: v for k, v in flat(tree).items() if not any(k == u or k.startswith(f"{u}.") for u in UNKEYED)}


def settings(files: list[str], args: list[str]) -> dict:
    """The keyed config a run of ``files`` + ``args`` is trained with, resolved now."""
    return keyed(load_config([REPO / f for f in files], [a for a in args if a != FIRST_PASS_FROM_ERM]))


def changed(made: dict, now: dict) -> list[str]:
    """The keys of ``now`` whose value the record's ``made`` differs in. A key ``made`` lacks (a field added to the
    code since) counts only where ``now`` is off its default; a key ``now`` lacks (a field removed) is ignored."""
    default = flat(to_dict(RunConfig()))
    return [k for k, v in now.items() if made.get(k, default.get(k)) != v]


def save_record(path: Path, args: list[str], config: dict, points: list[dict], labels: torch.Tensor) -> None:
    """Write a run's sweep to the committed store, predictions as bytes where they fit (gzip, ~30 KB a run)."""
    def small(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.uint8) if int(t.max()) < 256 else t

    buf = io.BytesIO()
    torch.save({"args": args, "config": config, "labels": small(labels),
                "points": [{**p, "test_pred": small(p["test_pred"])} for p in points]}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    tmp.replace(path)  # never a half-written record


def load_record(path: Path, args: list[str], config: dict) -> tuple[list[dict], torch.Tensor] | None:
    """A stored run's sweep and labels, or None when there is none or it was made with another config than
    ``config`` (what ``args``, its configs and overrides, resolve to now)."""
    if not path.is_file():
        return None
    rec = torch.load(io.BytesIO(gzip.decompress(path.read_bytes())), weights_only=True)
    diff = changed(rec["config"], config) if "config" in rec else ["(a record without its config)"]
    if diff:
        print(f"{path.relative_to(STORE.parent)}: stored for other settings than {' '.join(args)} "
              f"({', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''} differ); retraining")
        return None
    return [{**p, "test_pred": p["test_pred"].long()} for p in rec["points"]], rec["labels"].long()
