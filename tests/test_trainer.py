import math

import pytest
import torch
from conftest import NAMES_SECTIONS

from adaptive_lb.callbacks import Callback
from adaptive_lb.data import build_data
from adaptive_lb.errors import ConfigError, NonFiniteLossError
from adaptive_lb.rundir import RunDir, RunDirWriter
from adaptive_lb.trainer import Trainer

TIMING = ("time_s", "train_images_per_s")


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(f"epoch_start:{epoch}")

    def on_train_progress(self, trainer, images, loss):
        assert math.isfinite(loss) and images > 0

    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch_end:{record['epoch']}")

    def on_fit_end(self, trainer, summary):
        self.calls.append("fit_end")


class StopAfter(Callback):
    """Simulates Ctrl-C right after epoch ``n`` was checkpointed."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.n:
            raise KeyboardInterrupt


class PoisonAt(Callback):
    """Makes the loss NaN from epoch ``n`` on (0-based)."""

    def __init__(self, n):
        self.n = n

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.n:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_fit_records_every_epoch_and_calls_hooks(make_config):
    cfg = make_config(controller={"weights": [1.0, 1.0, 2.0, 4.0]})
    rec = Recorder()
    summary = Trainer(cfg, build_data(cfg.data, 0), [rec]).fit()
    assert rec.calls == ["fit_start", "epoch_start:0", "epoch_end:1", "epoch_start:1", "epoch_end:2",
                         "epoch_start:2", "epoch_end:3", "fit_end"]
    assert set(summary) >= {"heldout", "test", "class_names", "epochs"}
    assert summary["heldout"]["balanced_accuracy"] > 0.4  # learns something in 3 tiny epochs
    assert len(summary["test"]["tpr"]) == 4


def test_same_seed_same_run_other_seed_other_run(make_config):
    runs = [Trainer(make_config(train={"seed": s}), build_data(make_config().data, s)).fit() for s in (0, 0, 1)]
    assert runs[0]["test"] == runs[1]["test"]
    assert runs[0]["test"] != runs[2]["test"]


LOOP = {"name": "damped", "warmup_epochs": 0, "aug_gain": 2.0, "margin_gain": 0.5, "integral_gain": 0.1}


LONG_TAIL = {"long_tail": "exp", "imbalance_ratio": 10.0}


@pytest.mark.parametrize("sections, stop", [
    ({}, 2),
    ({"controller": {"weights": [0.5, 1.0, 1.5, 2.0]}}, 2),
    ({"controller": LOOP}, 2),
    ({"controller": LOOP, "augment": {"backend": "albumentations", "workers": 0}}, 1),
    ({"controller": {"name": "cdb"}}, 2),
    ({"controller": {"name": "two_pass"}}, 3),  # stop at the pass boundary: the resumed run starts the fresh model
    # LDAM on a cosine head, DRW switching after the stop, and a post-hoc step at the end (no re-sampler:
    # LDAM's margins already correct for the class counts)
    ({"data": LONG_TAIL, "model": {"head": "cosine"}, "loss": {"name": "ldam", "scale": 30.0},
      "controller": {"name": "drw", "count_weights": "effective_number", "drw_epoch": 2},
      "posthoc": {"method": "equalise", "sweeps": 2}}, 1),
    # re-sampled epochs whose extra copies are augmented, in albumentations workers
    ({"data": {**LONG_TAIL, "sampler": "oversample_aug"}, "augment": {"backend": "albumentations", "workers": 0},
      "controller": {**LOOP, "aug_init": 0.2}, "loss": {"name": "focal"}}, 1),
    ({**NAMES_SECTIONS, "controller": LOOP}, 2),  # text: char_gru, character edits driven by the loop
    ({"train": {"ema_decay": 0.9}, "controller": LOOP, "posthoc": {"method": "equalise", "sweeps": 2}}, 2),  # EMA
    ({"train": {"ema_decay": 0.9}, "controller": {"name": "two_pass"}}, 3),  # a fresh EMA for the second pass
    ({"train": {"ema_decay": 0.9, "distill_weight": 1.0}, "controller": LOOP}, 1),  # distilled from the EMA
])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, make_config, sections, stop, request):
    if sections.get("data", {}).get("name") == "names":
        request.getfixturevalue("fake_names")
    cfg = make_config(**sections)
    data = build_data(cfg.data, cfg.train.seed)
    full_dir = RunDir.create(tmp_path / "full", cfg)
    full = Trainer(cfg, data, [RunDirWriter(full_dir)]).fit()

    part_dir = RunDir.create(tmp_path / "part", cfg)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, data, [RunDirWriter(part_dir), StopAfter(stop)]).fit()
    resumed = Trainer(cfg, data, [RunDirWriter(part_dir)])
    resumed.load_state_dict(part_dir.load_checkpoint())
    assert resumed.epoch == stop
    assert resumed.fit() == full
    assert strip_timing(part_dir.read_metrics()) == strip_timing(full_dir.read_metrics())


@pytest.mark.parametrize("augment", [{}, {"backend": "albumentations", "workers": 0}])
def test_closed_loop_moves_every_actuator_and_logs_it(make_config, augment):
    cfg = make_config(controller=LOOP, augment=augment, train={"epochs": 3})
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    trainer.fit()
    rec = trainer.last_record  # the action applied in the last epoch came from earlier held-out TPRs
    assert len(set(rec["class_weights"])) > 1 and abs(sum(rec["class_weights"]) / 4 - 1) < 1e-5
    assert max(rec["aug_intensity"]) > 0 and all(0 <= a <= 1 for a in rec["aug_intensity"])
    assert max(map(abs, rec["logit_margin"])) > 0


def test_two_pass_trains_two_fresh_models_and_records_both(make_config):
    cfg = make_config(controller={"name": "two_pass"}, train={"epochs": 2})
    rec = Recorder()
    trainer = Trainer(cfg, build_data(cfg.data, 0), [rec])
    first_model = trainer.model
    summary = trainer.fit()
    assert trainer.total_epochs == 4 and summary["epochs"] == 4 and trainer.model is not first_model
    assert [c for c in rec.calls if c.startswith("epoch_end")] == [f"epoch_end:{e}" for e in range(1, 5)]
    (first,) = summary["earlier_passes"]
    assert first["class_weights"] == [1.0] * 4  # pass 1 is ERM
    assert trainer.last_record["pass"] == 2 and len(set(trainer.last_record["class_weights"])) > 1
    # pass 2 restarted from the same initialisation as pass 1, so only the weights differ
    again = Trainer(make_config(train={"epochs": 2}), build_data(cfg.data, 0)).fit()
    assert again["test"] == first["test"]


class Records(Callback):
    def __init__(self):
        self.records = []

    def on_epoch_end(self, trainer, record):
        self.records.append({k: v for k, v in record.items() if k not in (*TIMING, "epoch", "pass")})


def test_two_pass_second_pass_replays_the_first_pass_when_its_weights_are_equal(make_config):
    """power_ratio with p = 0 gives pass 2 unit weights: it must then be pass 1 again, epoch by epoch (same
    initialisation, same epoch seeds), so that the weights are the only difference between the passes."""
    cfg = make_config(controller={"name": "two_pass", "exponent": 0.0}, train={"epochs": 2})
    rec = Records()
    summary = Trainer(cfg, build_data(cfg.data, 0), [rec]).fit()
    assert len(rec.records) == 4 and rec.records[2]["class_weights"] == [1.0] * 4
    assert rec.records[2:] == rec.records[:2]
    assert summary["test"] == summary["earlier_passes"][0]["test"]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_two_pass_from_an_erm_runs_tpr_trains_only_pass_two_and_ends_as_both_passes(make_config, ema_decay):
    """Pass 1 is ERM with the same seeds, so an ERM run's final held-out TPR stands in for it exactly."""
    train = {"epochs": 2, "ema_decay": ema_decay}
    full = Trainer(cfg := make_config(controller={"name": "two_pass"}, train=train), build_data(cfg.data, 0))
    full.fit()
    erm = Trainer(make_config(train=train), build_data(cfg.data, 0))
    erm.fit()
    given = make_config(controller={"name": "two_pass", "first_pass_tpr": erm.last_record["heldout"]["tpr"]},
                        train=train)
    second = Trainer(given, build_data(cfg.data, 0))
    summary = second.fit()
    assert second.total_epochs == 2 and "earlier_passes" not in summary
    assert len(set(second.last_record["class_weights"])) > 1  # the weights of W(tpr), from the first epoch on
    assert second.last_record["class_weights"] == full.last_record["class_weights"]
    assert summary["test"] == full.summary()["test"]


@pytest.mark.parametrize("controller, message", [
    ({"name": "damped", "first_pass_tpr": [0.5] * 4}, "read by controller.name=two_pass only"),
    ({"name": "two_pass", "first_pass_tpr": [0.5, 1.5, 0.5, 0.5]}, r"must be in \[0, 1\]"),
    ({"name": "two_pass", "first_pass_tpr": [0.5] * 3}, "has 3 values for 4 classes"),
])
def test_bad_first_pass_tpr_is_one_clear_error(make_config, controller, message):
    with pytest.raises(ConfigError, match=message):
        cfg = make_config(controller=controller)
        Trainer(cfg, build_data(cfg.data, 0))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, make_config):
    cfg = make_config()
    run = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(NonFiniteLossError, match="became nan at epoch 2"):
        Trainer(cfg, build_data(cfg.data, 0), [RunDirWriter(run), PoisonAt(1)]).fit()
    state = run.load_checkpoint()
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(run.read_metrics()) == 1


@pytest.mark.parametrize("amp, channels_last", [("off", "off"), ("bf16", "on")])
def test_train_split_confusion_and_precision_paths(make_config, amp, channels_last):
    cfg = make_config(train={"epochs": 1, "amp": amp, "channels_last": channels_last})
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    trainer.fit()
    cm = trainer.confusion("train")
    assert int(cm.sum()) == len(trainer.data.train) and trainer.device.type == "cpu"
    assert trainer.amp == (amp == "bf16") and trainer.channels_last == (channels_last == "on")
    assert math.isfinite(trainer.last_record["train_loss"])


def test_test_every_skips_the_test_split_but_not_at_the_end(make_config):
    """train.test_every=0 evaluates the test split at the last epoch only; the training itself is unchanged."""
    from adaptive_lb.callbacks import Callback
    from adaptive_lb.data import build_data
    from adaptive_lb.trainer import Trainer

    class Keep(Callback):
        def __init__(self) -> None:
            self.records: list[dict] = []

        def on_epoch_end(self, trainer, record) -> None:
            self.records.append(record)

    results = {}
    for every in (1, 0, 2):
        cfg = make_config(train={"epochs": 3, "test_every": every})
        keep = Keep()
        summary = Trainer(cfg, build_data(cfg.data, cfg.train.seed), [keep]).fit()
        results[every] = (summary, keep.records)
    assert [r["test"] is None for r in results[0][1]] == [True, True, False]
    assert [r["test"] is None for r in results[2][1]] == [True, False, False]
    assert results[0][0]["test"] == results[1][0]["test"]  # same model, same final test metrics
    assert [r["heldout"] for r in results[0][1]] == [r["heldout"] for r in results[1][1]]


def test_evaluation_logits_are_fp32_even_when_training_in_bf16(make_config):
    """bf16 logits tie often and argmax sends ties to the lowest class: evaluation must not autocast."""
    cfg = make_config(train={"epochs": 1, "amp": "bf16", "channels_last": "off"})
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    trainer.fit()
    logits, labels = trainer.logits("heldout")
    trainer.model.eval()
    with torch.no_grad():
        xb, _ = next(iter(trainer.eval_loaders["heldout"].batches()))
        fp32 = trainer.model(xb)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = trainer.model(xb).float()
    assert logits.dtype == torch.float32 and len(labels) == len(trainer.data.heldout)
    assert torch.equal(logits[: len(xb)], fp32)
    assert not torch.equal(fp32, bf16), "the check above must be able to tell bf16 from fp32"


class FixedOffset(Callback):
    """Holds the training-time logit offset of class ``k`` at ``offset`` every epoch (the controller's action)."""

    def __init__(self, k, offset):
        self.k, self.offset = k, offset

    def on_epoch_start(self, trainer, epoch):
        margin = torch.zeros(trainer.data.num_classes, device=trainer.device)
        margin[self.k] = self.offset
        trainer.action = trainer.action._replace(logit_margin=margin)


def test_a_negative_training_offset_raises_that_class_recall_at_prediction(make_config):
    """The sign convention the controller rests on: offsets are added to the logits in the training loss only,
    so a negative offset on class k handicaps k in training, the model compensates by raising k's logit, and
    predictions from the raw logits pick k more often: k's recall rises (and no other class's does)."""
    k = 3  # the noisiest synthetic class
    cfg = make_config(train={"epochs": 3})
    data = build_data(cfg.data, 0)
    recall = {}
    for offset in (0.0, -1.5):
        trainer = Trainer(cfg, data, [FixedOffset(k, offset)])
        summary = trainer.fit()
        assert trainer.last_record["logit_margin"][k] == offset
        recall[offset] = summary["test"]["tpr"]
    assert recall[-1.5][k] > recall[0.0][k] + 0.05
    assert all(recall[-1.5][c] <= recall[0.0][c] + 0.02 for c in range(4) if c != k)


def test_with_ema_the_record_is_the_ema_models_and_raw_the_live_models(tmp_path, make_config):
    """EMA on: held-out/test, the controller's input and the checkpoint are the EMA model's; ``raw`` the live one's."""
    from adaptive_lb.metrics import summarize
    from adaptive_lb.trainer import SUMMARY_KEYS

    cfg = make_config(train={"epochs": 2, "ema_decay": 0.99}, controller=LOOP)
    run = RunDir.create(tmp_path / "run", cfg)
    trainer = Trainer(cfg, build_data(cfg.data, 0), [RunDirWriter(run)])
    summary = trainer.fit()
    rec, names = trainer.last_record, trainer.data.class_names

    def block(model, split):
        return {k: v for k, v in summarize(trainer.confusion(split, model=model), names, split).items()
                if k in SUMMARY_KEYS}

    assert trainer.eval_model is trainer.ema.module and trainer.model.training and not trainer.ema.module.training
    assert rec["heldout"] == block(trainer.ema.module, "heldout") == summary["heldout"]
    assert rec["raw"]["heldout"] == block(trainer.model, "heldout") == summary["raw"]["heldout"]
    assert rec["raw"]["test"] == block(trainer.model, "test")
    with torch.no_grad():  # two different models were evaluated (their metrics may tie on 24 images a class)
        live = torch.cat([z for z, _ in trainer._eval_logits("heldout", model=trainer.model)])
    assert not torch.equal(trainer.logits("heldout")[0], live)
    assert {"ema", "raw_eval"} <= set(rec["time_s"])
    state = run.load_checkpoint()
    assert state["ema"]["updates"] == 2 * len(trainer.train_loader)
    assert all(torch.equal(v, state["ema"]["module"][k]) for k, v in trainer.ema.module.state_dict().items())


class FullRecords(Callback):
    def __init__(self):
        self.records = []

    def on_epoch_end(self, trainer, record):
        self.records.append(record)


def test_raw_every_skips_the_live_models_evaluation_but_not_the_last_epoch_and_changes_nothing_else(make_config):
    """train.raw_every=0: the live model is evaluated on the last epoch only; the EMA run is otherwise identical."""
    runs = {}
    for every in (1, 0):
        cfg = make_config(train={"epochs": 3, "ema_decay": 0.9, "raw_every": every}, controller=LOOP)
        keep = FullRecords()
        Trainer(cfg, build_data(cfg.data, 0), [keep]).fit()
        runs[every] = keep.records
    assert ["raw" in r for r in runs[0]] == [False, False, True] and all("raw" in r for r in runs[1])
    assert runs[0][-1]["raw"] == runs[1][-1]["raw"]  # evaluating the live model reads and changes nothing
    for a, b in zip(runs[0], runs[1], strict=True):
        assert (a["heldout"], a.get("select"), a["class_weights"]) == (b["heldout"], b.get("select"),
                                                                       b["class_weights"])
        assert "raw_eval" in a["time_s"]


def test_without_ema_nothing_changes_in_the_record(make_config):
    trainer = Trainer(make_config(train={"epochs": 1}), build_data(make_config().data, 0))
    trainer.fit()
    assert trainer.ema is None and trainer.eval_model is trainer.model
    assert "raw" not in trainer.last_record and "ema" not in trainer.last_record["time_s"]


def test_ema_model_swings_less_epoch_to_epoch_than_the_raw_one(make_config):
    """High constant learning rate: the live model's held-out TPR jumps between epochs, the EMA's far less."""
    data = {"synthetic": {"num_classes": 4, "per_class": 120, "image_size": 12, "noise": 0.2}}
    cfg = make_config(train={"epochs": 12, "ema_decay": 0.95, "test_every": 0}, data=data,
                      optim={"lr": 0.2, "schedule": "constant"})

    class Keep(Callback):
        def __init__(self):
            self.records = []

        def on_epoch_end(self, trainer, record):
            self.records.append(record)

    keep = Keep()
    Trainer(cfg, build_data(cfg.data, 0), [keep]).fit()

    def swing(blocks):  # mean |TPR_e - TPR_(e-1)| over classes and the last 6 epoch-to-epoch steps
        tprs = torch.tensor([b["tpr"] for b in blocks[-7:]])  # (7, C)
        return (tprs[1:] - tprs[:-1]).abs().mean().item()

    ema, raw = swing([r["heldout"] for r in keep.records]), swing([r["raw"]["heldout"] for r in keep.records])
    assert raw > 0.02, "the setting must make the raw model swing, or the test shows nothing"
    assert ema < 0.6 * raw, (ema, raw)


def test_self_distillation_pulls_the_live_model_towards_the_ema_model(make_config):
    """train.distill_weight: the live model's held-out soft labels end closer to the EMA model's than without."""
    from adaptive_lb.losses import distillation_loss

    gaps = {}
    for weight in (0.0, 5.0):
        cfg = make_config(train={"epochs": 2, "ema_decay": 0.9, "distill_weight": weight})
        trainer = Trainer(cfg, build_data(cfg.data, 0))
        trainer.fit()
        with torch.no_grad():
            live = torch.cat([z for z, _ in trainer._eval_logits("heldout", model=trainer.model)])
            ema = torch.cat([z for z, _ in trainer._eval_logits("heldout", model=trainer.ema.module)])
        gaps[weight] = distillation_loss(live, ema, 2.0).mean().item()
    assert gaps[5.0] < 0.5 * gaps[0.0]


def test_self_distillation_without_ema_is_one_clear_error(make_config):
    with pytest.raises(ConfigError, match=r"train.distill_weight=0.5 .*set train.ema_decay"):
        make_config(train={"distill_weight": 0.5})


def test_two_pass_starts_a_fresh_ema_with_the_fresh_model(make_config):
    cfg = make_config(controller={"name": "two_pass"}, train={"epochs": 2, "ema_decay": 0.9})
    trainer = Trainer(cfg, build_data(cfg.data, 0))
    first = trainer.ema
    trainer.fit()
    assert trainer.ema is not first and trainer.ema.updates == 2 * len(trainer.train_loader)  # pass 2's steps only


def test_confused_pair_mixing_blends_training_images_and_is_recorded(make_config):
    """mix_gain > 0: once the loop acts, the record names the blended pairs and training differs from the loop
    without it; text data refuses it."""
    runs = {}
    for gain in (0.0, 0.5):
        cfg = make_config(train={"epochs": 3}, controller={**LOOP, "warmup_epochs": 1, "mix_gain": gain})
        keep = FullRecords()
        Trainer(cfg, build_data(cfg.data, 0), [keep]).fit()
        runs[gain] = keep.records
    assert "pair_mix" not in runs[0.0][-1] and runs[0.5][0]["pair_mix"] == []  # epoch 1 trained unblended
    assert runs[0.5][-1]["pair_mix"] and all(p[2] > 0 for p in runs[0.5][-1]["pair_mix"])
    assert runs[0.5][0]["heldout"] == runs[0.0][0]["heldout"]
    assert runs[0.5][-1]["train_loss"] != runs[0.0][-1]["train_loss"]
    names = make_config(**{**NAMES_SECTIONS, "controller": {"name": "damped", "mix_gain": 0.1}})
    with pytest.raises(ConfigError, match=r"^controller.mix_gain blends images; these are text codes"):
        Trainer(names, build_data(names.data, 0))


def test_auto_calibration_is_chosen_on_select_and_recorded(make_config):
    """posthoc.spread_weight=auto: the summary records the weight chosen on select (cross-fitted) with every
    candidate's scores; the biases are the fit at that weight (none when 0 is chosen)."""
    cfg = make_config(train={"epochs": 2}, posthoc={"method": "equalise", "sweeps": 2, "spread_weight": "auto"})
    summary = Trainer(cfg, build_data(cfg.data, cfg.train.seed)).fit()
    p = summary["posthoc"]
    chosen = p["choice"]["spread_weight"]
    assert [c["spread_weight"] for c in p["choice"]["candidates"]] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert p["fitted_on"] == "select" and chosen in (0.0, 0.25, 0.5, 1.0, 2.0)
    if chosen == 0.0:
        assert not any(p["bias"]) and p["test"]["accuracy"] == summary["test"]["accuracy"]
    else:
        assert any(p["bias"])
