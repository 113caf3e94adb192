"""The training loop: it owns epochs and counters; data, model, controller and callbacks plug in.

Every epoch: train on the training part with the controller's current action, evaluate the held-out
split (which drives the controller) and the test split (reported only, never used for a decision), then
let the controller update. All randomness of epoch e is seeded from (seed, e), so a run resumed from the
checkpoint of epoch e replays exactly what an uninterrupted run does.

Under torchrun (a process group of several ranks, ``distributed.py``) each rank trains on its part of every
global batch through DistributedDataParallel and evaluates a disjoint shard of each split; confusion counts are
summed and held-out logits gathered, so every rank sees the same measurement and takes the same action.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from adaptive_lb import distributed as ddp
from adaptive_lb.augment import TensorAugmenter, TextAugmenter
from adaptive_lb.balancer import RecallBalancer, gather_rows
from adaptive_lb.callbacks import Callback
from adaptive_lb.config import RunConfig
from adaptive_lb.controllers import ControlAction, top_pairs
from adaptive_lb.data import BatchLoader, DataBundle
from adaptive_lb.data.build import Split, fingerprint_mismatch
from adaptive_lb.data.loader import auto_batch_size
from adaptive_lb.data.samplers import check_sampler, epoch_size
from adaptive_lb.data.splits import class_counts
from adaptive_lb.ema import ModelEma
from adaptive_lb.errors import ConfigError, ConfigWarning, NonFiniteLossError, RunDirError
from adaptive_lb.losses import distillation_loss
from adaptive_lb.metrics import confusion_matrix, summarize
from adaptive_lb.models import create_model
from adaptive_lb.optim import create_optimizer, create_scheduler

if TYPE_CHECKING:
    from adaptive_lb.augment.albu import AlbumentationsLoader

SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "tpr", "tpr_std", "tpr_var", "worst_tpr", "worst_class",
                "tpr_gap")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is visible: use train.device=auto or cpu")
    return device


def resolve_config(cfg: RunConfig, data: DataBundle) -> RunConfig:
    """``cfg`` with what depends on the data filled in (``train.batch_size=auto``): what a run dir records."""
    if cfg.train.batch_size != "auto":
        return cfg
    images = epoch_size(data.train.y, data.num_classes, cfg.data.sampler)
    with warnings.catch_warnings():  # the config's warnings were shown when it was loaded
        warnings.simplefilter("ignore", ConfigWarning)
        return replace(cfg, train=replace(cfg.train, batch_size=auto_batch_size(images)))


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of all randomness in epoch ``epoch`` (shuffling, dropout, augmentation)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


class Trainer:
    """Fits ``cfg.model`` on ``data`` under ``cfg.controller``; see the module docstring."""

    def __init__(self, cfg: RunConfig, data: DataBundle, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg, self.callbacks = resolve_config(cfg, data), list(callbacks)
        t = self.cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        self.rank, self.world = ddp.rank(), ddp.world_size()  # 0, 1 in one process
        if self.world > 1:  # albumentations' CPU workers draw their own order: not sharded (yet)
            if cfg.augment.backend == "albumentations":
                raise ConfigError("augment.backend=albumentations runs in one process only: use "
                                  "augment.backend=tensor with several processes (--nproc / torchrun)")
            self.device = ddp.check_device(self.device)
        cuda = self.device.type == "cuda"
        self.amp = t.amp == "bf16" or (t.amp == "auto" and cuda)
        # measured: channels_last is ~25 % faster for the small CNN on CPU too (bench/README.md)
        self.channels_last = not data.is_text and (
            t.channels_last == "on" or (t.channels_last == "auto" and self.device.type != "mps"))
        self.data_fingerprint = data.fingerprint()  # stored in checkpoints: resume/eval refuse other data
        self.data = data.to(self.device)
        self.train_counts = class_counts(data.train.y.cpu(), data.num_classes)  # (C,) drives count weights, LDAM
        check_sampler(data.train.y, data.num_classes, cfg.data.sampler, data.class_names)
        if data.is_text and cfg.controller.mix_gain:
            raise ConfigError("controller.mix_gain blends images; these are text codes: set controller.mix_gain=0 "
                              "(per-class character edits are augment.ops for text)")
        # the controller path (loss under the action, controller update, calibration fit): the public API's object
        self.balancer = RecallBalancer.from_config(cfg, class_names=data.class_names, train_counts=self.train_counts)
        # evaluation loaders: every sample once, in order, unaugmented ("train" too, for `eval --split train`)
        # (DDP: this rank's contiguous shard of each split; counts are summed over ranks in `confusion`)
        self.eval_loaders = {name: BatchLoader(self._shard(split), self.data.mean, self.data.std,
                                               t.eval_batch_size, self.channels_last, text=self.data.is_text)
                             for name, split in self.data.splits().items()}
        self.train_loader = self._train_loader()
        self.total_epochs = t.epochs * self.balancer.passes
        self._fresh_model()
        self.epoch = 0             # completed epochs, over all passes
        self._ema_s = 0.0          # seconds of EMA updates in the current epoch
        self.last_record: dict = {}  # metrics of the last completed epoch
        self.last_confusion: dict = {}  # its held-out and test confusion matrices, cm[true][predicted]
        self.pass_summaries: list[dict] = []  # final metrics of each finished pass but the last

    def _train_loader(self) -> BatchLoader | AlbumentationsLoader:
        t, a, d = self.cfg.train, self.cfg.augment, self.cfg.data
        if a.backend == "albumentations":
            from adaptive_lb.augment.albu import AlbumentationsLoader

            return AlbumentationsLoader(self.data.train, self.data.mean, self.data.std, t.batch_size,
                                        self.channels_last, self.device, a.ops, self.data.num_classes, a.workers,
                                        d.sampler, d.copy_aug)
        augmenter = TextAugmenter(a.ops) if self.data.is_text else TensorAugmenter(a.ops)
        return BatchLoader(self.data.train, self.data.mean, self.data.std, t.batch_size, self.channels_last,
                           augmenter, d.sampler, self.data.num_classes, d.copy_aug, self.data.is_text,
                           shard=(self.rank, self.world))

    def _shard(self, split: Split) -> Split:
        """This rank's contiguous shard of ``split`` (the whole split in one process)."""
        if self.world == 1:
            return split
        lo, hi = ddp.shard_range(len(split))
        return Split(split.x[lo:hi], split.y[lo:hi])

    def _fresh_model(self) -> None:
        """Model, optimiser and schedule as at the start of a pass: same seed, so every pass starts alike."""
        torch.manual_seed(self.cfg.train.seed)
        model = create_model(self.cfg.model, self.data.in_channels, self.data.num_classes).to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.train_model = ddp.wrap_ddp(self.model, self.device)  # the DDP wrapper when distributed, else the model
        self.optimizer = create_optimizer(self.cfg.optim, self.model)
        self.scheduler = create_scheduler(self.cfg.optim, self.optimizer, self.cfg.train.epochs,
                                          len(self.train_loader))
        t = self.cfg.train
        self.ema = ModelEma(self.model, t.ema_decay, t.ema_warmup) if t.ema_decay else None  # fresh per pass

    @property
    def action(self) -> ControlAction:
        """The balancer's current action on the training device (what the next epoch applies)."""
        return self.balancer.action_on(self.device)

    @action.setter
    def action(self, action: ControlAction) -> None:
        self.balancer.action = action

    @property
    def eval_model(self) -> torch.nn.Module:
        """The model that is evaluated, read by the controller, fitted post hoc and reported: the EMA when on."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train the remaining epochs; return the summary (final held-out and test metrics)."""
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            while self.epoch < self.total_epochs:
                record = self.run_epoch()
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
        except BaseException as exc:
            for cb in self.callbacks:
                cb.on_exception(self, exc)
            raise
        summary = self.summary()
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def run_epoch(self) -> dict:
        """Train one epoch, evaluate, update the controller; return the epoch's record."""
        epoch, per_pass = self.epoch, self.cfg.train.epochs
        if epoch and epoch % per_pass == 0:  # a new pass (two_pass): keep the last pass's result, start afresh
            self.pass_summaries.append({k: self.last_record[k] for k in ("heldout", "test", "class_weights")})
            self._fresh_model()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        applied = self.action
        t0 = time.perf_counter()
        loss, images = self.train_one_epoch(epoch)
        t1 = time.perf_counter()
        self.balancer.observe(*self._split_logits("heldout"))  # the control split
        t2 = time.perf_counter()
        self.balancer.step()  # the controller update from the control split's Measurement
        cms = {"heldout": self.balancer.last_measurement.confusion}
        t3 = time.perf_counter()
        if self.data.select is not None:  # choices and tune's objective, never the controller: not the loop's cost
            cms["select"] = self.confusion("select")
        t4 = time.perf_counter()
        with_test = self._due(epoch, self.cfg.train.test_every)
        if with_test:  # else skipped (train.test_every): the test split is reported only
            cms["test"] = self.confusion("test")
        t5 = time.perf_counter()
        raw = self._raw_metrics(with_test) if self.ema is not None and self._due(epoch, self.cfg.train.raw_every) \
            else None
        t6 = time.perf_counter()
        self.epoch += 1
        self.last_confusion = {"test": None, **{split: cm.tolist() for split, cm in cms.items()}}  # (C, C) each
        blocks = {split: self._block(cm, split) for split, cm in cms.items()}
        self.last_record = {
            "epoch": self.epoch, "pass": epoch // per_pass + 1, "train_loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "heldout": blocks["heldout"], **({"select": blocks["select"]} if "select" in blocks else {}),
            "test": blocks.get("test"),
            "class_weights": applied.class_weights.tolist(), "aug_intensity": applied.aug_intensity.tolist(),
            "logit_margin": applied.logit_margin.tolist(), "pair_margin": top_pairs(applied.pair_margin),
            **({"pair_mix": top_pairs(applied.pair_mix, symmetric=False)} if self.cfg.controller.mix_gain else {}),
            # disjoint phases that add up to the epoch ("ema" and "raw_eval" only with EMA on)
            "time_s": {"train": t1 - t0 - self._ema_s, "heldout_eval": t2 - t1, "control": t3 - t2,
                       **({"select_eval": t4 - t3} if "select" in cms else {}), "test_eval": t5 - t4},
            "train_images_per_s": images / max(t1 - t0, 1e-9),
        }
        if self.ema is not None:  # EMA on: the numbers above are the EMA model's; "raw" the live model's
            self.last_record["time_s"].update(ema=self._ema_s, raw_eval=t6 - t5)
            if raw is not None:
                self.last_record["raw"] = raw
        return self.last_record

    def _due(self, epoch: int, every: int) -> bool:
        """Whether a reporting-only evaluation runs after ``epoch`` (0-based): every ``every`` epochs, and
        always on the last epoch of a pass; ``every`` 0 = the last epoch only."""
        return (epoch + 1) % self.cfg.train.epochs == 0 or bool(every and (epoch + 1) % every == 0)

    def _block(self, cm: torch.Tensor, split: str) -> dict:
        """The headline metrics (``SUMMARY_KEYS``) of one split's ``(C, C)`` confusion matrix."""
        full = summarize(cm, self.data.class_names, "held-out (control)" if split == "heldout" else split)
        return {k: v for k, v in full.items() if k in SUMMARY_KEYS}

    def _raw_metrics(self, with_test: bool) -> dict:
        """Held-out, select (and test) metrics of the live model, kept beside the EMA model's (reported only)."""
        splits = [s for s in ("heldout", "select", "test") if s in self.eval_loaders and (s != "test" or with_test)]
        out: dict = {"test": None}
        for split in splits:
            out[split] = self._block(self.confusion(split, model=self.model), split)
        return out

    def train_one_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training part; returns (mean loss, images). Syncs only every ``log_every``."""
        seed = epoch_seed(self.cfg.train.seed, epoch % self.cfg.train.epochs)  # two_pass: pass 2 replays pass 1's
        torch.manual_seed(seed + self.rank)  # dropout, augmentation: each rank its own draws (rank 0: as one process)
        gen = torch.Generator().manual_seed(seed)  # the epoch's order: the same on every rank
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        images, log_every = 0, self.cfg.train.log_every
        last = len(self.train_loader) - 1
        self._ema_s = 0.0  # seconds spent in EMA updates this epoch (launch time only on an async device)
        for i, (xb, yb) in enumerate(self.train_loader.batches(gen, self.action.aug_intensity)):
            xb = self.balancer.blend(xb, yb)  # confused-pair mixup (controller.mix_gain); xb itself when off
            with self._autocast():
                logits = self.train_model(xb)  # (B, C); DDP: this rank's part of the global batch
            loss = self.balancer.loss(logits, yb)  # weights, offsets and pair margins of the current action
            if self.cfg.train.distill_weight:  # the EMA model's soft labels of this batch (checked: EMA is on)
                loss = loss + self._distillation(xb, logits)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            ddp.average_buffers(self.model)  # DDP: BatchNorm statistics alike on every rank (no-op in one process)
            if self.ema is not None:
                t_ema = time.perf_counter()
                self.ema.update(self.model)
                self._ema_s += time.perf_counter() - t_ema
            loss_sum += loss.detach() * len(yb)
            images += len(yb)
            for cb in self.callbacks:
                cb.on_train_batch_end(self, i, images * self.world)  # DDP: about the global count
            if (i + 1) % log_every == 0 or i == last:
                mean_loss = self._mean_loss(loss_sum, images)  # the only host sync of the step loop
                if not math.isfinite(mean_loss):
                    raise NonFiniteLossError(f"training loss became {mean_loss} at epoch {epoch + 1}, batch {i + 1}")
                for cb in self.callbacks:
                    cb.on_train_progress(self, images * self.world, mean_loss)
        if self.world > 1:  # the images of all ranks this epoch (images/s of the whole job)
            images = int(ddp.sum_over_ranks(loss_sum, images)[1])
        return mean_loss, images

    def _distillation(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``train.distill_weight`` times the mean self-distillation term of a batch, teacher the EMA model."""
        t = self.cfg.train
        with torch.no_grad(), self._autocast():
            teacher = self.ema.module(xb)  # (B, C); eval mode: BatchNorm's running statistics
        return t.distill_weight * distillation_loss(logits, teacher, t.distill_temperature).mean()

    def _mean_loss(self, loss_sum: torch.Tensor, images: int) -> float:
        """Mean training loss so far (all ranks' when distributed: every rank sees the same NaN and stops)."""
        if self.world == 1:
            return loss_sum.item() / images
        total, count = ddp.sum_over_ranks(loss_sum, images)
        return total / count

    @torch.no_grad()
    def confusion(self, split: str, bias: torch.Tensor | None = None,
                  model: torch.nn.Module | None = None) -> torch.Tensor:
        """``(C, C)`` confusion matrix of ``model`` (default: ``eval_model``) on ``train``, ``heldout`` or ``test``.

        ``bias`` ``(C,)`` is added to the logits before the argmax (post-hoc corrections).
        """
        num = self.data.num_classes
        bias = torch.zeros(num, device=self.device) if bias is None else bias.to(self.device)
        cm = torch.zeros(num, num, dtype=torch.int64, device=self.device)
        for logits, yb in self._eval_logits(split, model):
            cm += confusion_matrix(yb, (logits + bias).argmax(dim=1), num)
        return ddp.all_reduce_sum(cm)  # DDP: the ranks' disjoint shards, each image counted once

    def logits(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)`` float32 and labels ``(N,)`` of a whole split (all ranks' shards, in order), on the CPU."""
        z, y = self._split_logits(split)
        return gather_rows(z).cpu(), gather_rows(y).cpu()

    @torch.no_grad()
    def _split_logits(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)`` float32 and labels ``(N,)`` of a split (DDP: this rank's shard), on the training device."""
        pairs = list(self._eval_logits(split))
        return torch.cat([z for z, _ in pairs]), torch.cat([y for _, y in pairs])

    def _eval_logits(self, split: str, model: torch.nn.Module | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of float32 logits ``(B, C)`` and labels ``(B,)`` of ``model`` (default ``eval_model``) in eval
        mode, on the training device; the model's train/eval mode is restored afterwards.

        No autocast here even when training runs in bf16: bf16 logits (8 mantissa bits) tie often, and argmax
        sends ties to the lowest class index, a bias in exactly the per-class TPR the controller and the
        post-hoc fit read. Callers wrap it in ``torch.no_grad()``.
        """
        if split not in self.eval_loaders:
            raise ValueError(f"unknown split '{split}': use one of {', '.join(self.eval_loaders)}")
        model = self.eval_model if model is None else model
        was_training = model.training
        model.eval()
        try:
            for xb, yb in self.eval_loaders[split].batches():
                yield model(xb).float(), yb
        finally:
            model.train(was_training)

    def posthoc(self) -> dict | None:
        """The configured post-hoc correction and its metrics on every evaluated split.

        ``equalise`` biases are fitted on the ``select`` split (on the control split when there is none), never
        on the test split; ``logit_adjust`` biases come from the training prior.
        """
        from adaptive_lb.posthoc import logit_adjust_biases

        p = self.cfg.posthoc
        if p.method == "none":
            return None
        splits = [s for s in ("heldout", "select", "test") if s in self.eval_loaders]
        # one pass each, reused below; DDP: this rank's shard (the fit gathers all ranks', the counts are summed)
        logits = {split: self._split_logits(split) for split in splits}
        fit_on = "select" if "select" in logits else "heldout"
        if p.method == "equalise":
            bias = self.balancer.fit_calibration(*logits[fit_on])  # sweeps, spread_weight: cfg.posthoc
        else:
            bias = logit_adjust_biases(self.train_counts, p.tau)
        num = self.data.num_classes
        cms = {split: ddp.all_reduce_sum(confusion_matrix(y.cpu(), (z.cpu() + bias).argmax(dim=1), num))
               for split, (z, y) in logits.items()}
        fit = {}  # equalise: the spread weight used, and with auto the choice made on select
        if p.method == "equalise":
            choice = self.balancer.calibration_choice
            fit = {"spread_weight": choice["spread_weight"], "choice": choice} if choice else {
                "spread_weight": p.spread_weight}
        return {"method": p.method, "fitted_on": fit_on if p.method == "equalise" else "train prior",
                "bias": bias.tolist(), **fit, **{split: self._block(cm, split) for split, cm in cms.items()},
                "confusion": {split: cm.tolist() for split, cm in cms.items()}}

    def summary(self) -> dict:
        """Final held-out and test metrics of the last epoch (the model that is saved), and post-hoc ones."""
        rec = self.last_record
        out = {"epochs": self.epoch, "class_names": list(self.data.class_names), "heldout": rec["heldout"],
               **({"select": rec["select"]} if "select" in rec else {}), "test": rec["test"],
               "confusion": self.last_confusion, "device": str(self.device),
               "splits": {name: len(split) for name, split in self.data.splits().items()}}
        if "raw" in rec:
            out["raw"] = rec["raw"]  # EMA on: the live model's final held-out, select and test metrics
        if self.pass_summaries:
            out["earlier_passes"] = self.pass_summaries
        posthoc = self.posthoc()
        if posthoc:
            out["posthoc"] = posthoc
        return out

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: model, optimiser, schedule, controller, counters."""
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), **self.balancer.state_dict(),  # controller, action, ...
                "last_record": self.last_record,
                "last_confusion": self.last_confusion,
                "pass_summaries": self.pass_summaries, "data": self.data_fingerprint,
                "threads": torch.get_num_threads(), "device": str(self.device),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; refuses (``RunDirError``) a checkpoint made on other data or another model."""
        if "data" in state:  # checkpoints made before fingerprints were stored have none
            differs = fingerprint_mismatch(state["data"], self.data_fingerprint)
            if differs:
                raise RunDirError(f"the checkpoint was made on other data ({differs}): restore the dataset the "
                                  "run used, or start a new run")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.balancer.load_state_dict({"steps": state["epoch"], **state})  # older checkpoints: no "steps"
            if self.ema is not None:  # a checkpoint without an EMA cannot continue an EMA run exactly
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunDirError(f"the checkpoint does not fit this config's model, optimiser or controller "
                              f"({first[:160]}): it was made by another config or version; start a new run") from None
        self.epoch, self.last_record = state["epoch"], state["last_record"]
        self.last_confusion = state.get("last_confusion", {})
        self.pass_summaries = state["pass_summaries"]

    # ------------------------------------------------------------------------------------------ helpers
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
