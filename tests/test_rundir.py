"""Run dirs that survive crashes and refuse what they cannot trust (issue "Hardening", items 1-5 and 10).

Most cases run the CLI in-process on the seconds-long synthetic config; a stop "after the last checkpoint",
a torn metrics line, a full disk and replaced dataset files are made to happen, not assumed.
"""

import errno
import json
import os
import stat

import pytest
import torch
from conftest import ROOT
from test_datasets import write_fake_fashion_mnist

from adaptive_lb.cli import main
from adaptive_lb.rundir import CHECKPOINT, METRICS, SUMMARY, RunDir, RunDirWriter, atomic_write

SYNTH = str(ROOT / "configs" / "synthetic.yaml")
QUICK = ["train.epochs=2", "--quiet"]


def _train(tmp_path, name="run", *extra, rc=0):
    out = tmp_path / name
    assert main(["train", SYNTH, *QUICK, *extra, "--out", str(out)]) == rc
    return out


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("adaptive-lb: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ------------------------------------------------------------------------------------------ item 1
def test_resume_after_the_last_checkpoint_writes_summary_and_plots(tmp_path, capsys):
    """Stopped after the final epoch's checkpoint but before summary.json: --resume finishes the run."""
    out = _train(tmp_path, "run", "--no-plots")
    expected = json.loads((out / SUMMARY).read_text())
    (out / SUMMARY).unlink()  # what a kill during the post-hoc fit or the plots leaves
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    _one_line_error(capsys, "has no summary.json", f"--resume {out}")
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / SUMMARY).read_text()) == expected
    assert (out / "plots").is_dir() and any((out / "plots").iterdir())
    assert len(RunDir(out).read_metrics()) == 2, "no epoch is trained again"
    assert main(["report", str(out)]) == 0


# ------------------------------------------------------------------------------------------ item 2
def test_a_torn_metrics_line_is_dropped(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 1, "x": 0.5})
    run.append_metrics({"epoch": 2, "x": 0.25})
    with open(tmp_path / METRICS, "a") as fh:
        fh.write('{"epoch": 3, "train_lo')  # SIGKILL or a full disk mid-write
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    run.trim_metrics(5)
    assert (tmp_path / METRICS).read_text().splitlines() == ['{"epoch": 1, "x": 0.5}', '{"epoch": 2, "x": 0.25}']
    run.trim_metrics(1)
    assert [r["epoch"] for r in run.read_metrics()] == [1]


# ------------------------------------------------------------------------------------------ item 3
def test_resume_refuses_other_data_and_damaged_checkpoints(tmp_path, capsys):
    """Same config, other files: replaced Fashion-MNIST files of the same size are refused, as is another
    class count; a damaged checkpoint or one with missing keys is one line, exit 2."""
    root = tmp_path / "fm"
    write_fake_fashion_mnist(root, n_train=200, n_test=50)
    args = ["train", str(ROOT / "configs" / "fashion_mnist.yaml"), f"data.root={root}", "data.heldout_fraction=0.2",
            "model.width=4", "train.device=cpu", "train.threads=1", "--quiet", "--no-plots"]
    out = tmp_path / "run"
    assert main([*args, "train.epochs=1", "--out", str(out)]) == 0
    (out / SUMMARY).unlink()
    capsys.readouterr()
    replaced = tmp_path / "other"
    write_fake_fashion_mnist(replaced, n_train=200, n_test=50, seed=1)
    for name in os.listdir(replaced):
        os.replace(replaced / name, root / name)
    for argv in (["train", "--resume", str(out)], ["eval", str(out)]):
        assert main(argv) == 2
        _one_line_error(capsys, "checkpoint was made on other data", "other images or labels")

    synth = _train(tmp_path, "synth", "--no-plots")
    (synth / SUMMARY).unlink()
    cfg = (synth / "config.yaml").read_text()
    (synth / "config.yaml").write_text(cfg.replace("num_classes: 6", "num_classes: 5"))
    assert main(["train", "--resume", str(synth)]) == 2
    _one_line_error(capsys, "checkpoint was made on other data", "classes")
    (synth / "config.yaml").write_text(cfg)

    state = torch.load(synth / CHECKPOINT, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "optimizer"}, synth / CHECKPOINT)
    assert main(["train", "--resume", str(synth)]) == 2
    _one_line_error(capsys, "lacks optimizer")
    (synth / CHECKPOINT).write_bytes(b"\x80\x02 not a checkpoint")
    assert main(["eval", str(synth)]) == 2
    _one_line_error(capsys, "cannot be read", "start a new run")


# ------------------------------------------------------------------------------------------ item 4
class _Payload:
    """Unpickling this would run code: it must never happen when a checkpoint is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoints_load_without_unpickling_code(tmp_path, capsys):
    out = _train(tmp_path, "run", "train.epochs=1", "--no-plots")
    state = torch.load(out / CHECKPOINT, weights_only=True)  # a real checkpoint is tensors and plain data
    assert state["epoch"] == 1 and state["data"]["sizes"]["train"] == 6 * 240
    marker = tmp_path / "pwned"
    torch.save({**state, "last_record": _Payload(marker)}, out / CHECKPOINT)
    (out / SUMMARY).unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    _one_line_error(capsys, "cannot be read")
    assert not marker.exists(), "loading a checkpoint executed code"


# ------------------------------------------------------------------------------------------ item 5
def test_disk_full_mid_run_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def save(obj, f, *a, **kw):  # the 2nd checkpoint hits a full disk half-way through the temp file
        calls.append(1)
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    assert main(["train", SYNTH, "train.epochs=3", "--quiet", "--out", str(out)]) == 1
    _one_line_error(capsys, f"cannot write '{out / CHECKPOINT}'", "No space left on device", "free disk space",
                    "checkpoint of epoch 1 kept", f"--resume {out}")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.jsonl"], \
        "no temp file is left behind"
    assert RunDir(out).load_checkpoint()["epoch"] == 1
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", "--resume", str(out), "--quiet", "--no-plots"]) == 0
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2, 3]


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", SYNTH, *QUICK, "--out", str(tmp_path / "file" / "run")]) == 2
    _one_line_error(capsys, "cannot write", str(tmp_path / "file" / "run"))


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f.txt", lambda fh: fh.write(b"hello"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").read_bytes() == b"hello" and synced == [False, True]
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644, "readable like any file, not mkstemp's 0600"


# ------------------------------------------------------------------------------------------ item 10
def test_resume_takes_machine_settings_and_refuses_experiment_changes(tmp_path, capsys, monkeypatch):
    threads = torch.get_num_threads()
    stop_after_one = RunDirWriter.on_epoch_end

    def on_epoch_end(self, trainer, record):  # Ctrl-C right after epoch 1's checkpoint
        stop_after_one(self, trainer, record)
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(RunDirWriter, "on_epoch_end", on_epoch_end)
        assert main(["train", SYNTH, *QUICK, "--out", str(out), "train.threads=1"]) == 130
    capsys.readouterr()
    try:
        assert main(["train", "--resume", str(out), "optim.lr=0.1"]) == 2
        _one_line_error(capsys, "--resume cannot change optim.lr", "start a new run")
        assert main(["train", "--resume", str(out), "train.threads=2", "train.device=cpu", "--quiet",
                     "--no-plots"]) == 0
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-lb: warning: resuming with CPU threads 1 -> 2"), err
    assert "bit-for-bit" in err[0]
    assert "threads: 2" in (out / "config.yaml").read_text(), "config.yaml records the settings it went on with"
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2]


def test_the_saved_model_applies_normalisation_and_calibration(tmp_path):
    """model.pt alone (no dataset) reproduces the run's calibrated test predictions."""
    from adaptive_lb.data import build_data
    from adaptive_lb.export import load_model

    out = _train(tmp_path, "run", "train.epochs=1", "posthoc.method=equalise", "--no-plots")
    summary = json.loads((out / SUMMARY).read_text())
    model, raw = load_model(out), load_model(out, calibrated=False)
    assert model.bias.tolist() == pytest.approx(summary["posthoc"]["bias"]) and not raw.bias.any()
    run = RunDir(out)
    data = build_data(run.config().data, 0)
    pred = model.predict(data.test.x)  # uint8 images straight from the dataset
    tpr = [float((pred[data.test.y == c] == c).double().mean()) for c in range(6)]
    assert tpr == pytest.approx(summary["posthoc"]["test"]["tpr"])
    assert raw.predict(data.test.x.float() / 255).eq(data.test.y).double().mean().item() == pytest.approx(
        summary["test"]["accuracy"])
