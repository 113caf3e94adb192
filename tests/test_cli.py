"""The CLI end to end: real Fashion-MNIST subsets, bad input, kill-and-resume, Ctrl-C."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, cli_env, run_cli

from adaptive_lb.cli import main

FMNIST = str(ROOT / "configs" / "fashion_mnist.yaml")
SYNTH = str(ROOT / "configs" / "synthetic.yaml")
QUICK_FMNIST = ["data.subset_per_class=100", "data.test_subset_per_class=50", "train.batch_size=64"]


def test_train_and_eval_on_a_fashion_mnist_subset(tmp_path, fmnist_available):
    out = tmp_path / "run"
    # an override after the options is accepted too
    res = run_cli("train", FMNIST, *QUICK_FMNIST, "--out", str(out), "train.epochs=2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "checkpoint.pt", "model.pt",
                                         "summary.json", "plots"}
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert len(r["heldout"]["tpr"]) == len(r["test"]["tpr"]) == 10
        assert r["class_weights"] == [1.0] * 10 and r["aug_intensity"] == [0.0] * 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"][6] == "Shirt"
    for split in ("heldout", "test"):
        block = summary[split]
        assert set(block) >= {"accuracy", "balanced_accuracy", "tpr", "tpr_std", "tpr_var", "worst_tpr"}
        assert 0.3 < block["accuracy"] <= 1.0  # 900 images, 2 epochs: well above chance (0.1)
        assert block["tpr_var"] == pytest.approx(block["tpr_std"] ** 2)
    assert "final test" in res.stdout and "Shirt" in res.stdout  # piped output -> plain lines

    ev = run_cli("eval", str(out), cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert "Ankle boot" in ev.stdout and "precision" in ev.stdout
    # eval reproduces the final test metrics, with the calibration biases the shipped config ends with
    assert f"acc {summary['posthoc']['test']['accuracy']:.4f}" in " ".join(ev.stdout.split())
    ev = run_cli("eval", str(out), "--split", "heldout", "--raw", cwd=tmp_path)
    assert f"acc {summary['heldout']['accuracy']:.4f}" in " ".join(ev.stdout.split())

    again = run_cli("train", "--resume", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "has finished (summary.json written): nothing to resume" in again.stderr


def test_eval_json_predictions_and_train_split(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", SYNTH, "train.epochs=1", "--out", str(out), "--quiet", "--no-plots"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    preds = tmp_path / "preds.csv"
    assert main(["eval", str(out), "--json", "--predictions", str(preds)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["epoch"] == 1 and report["posthoc"] is None
    assert report["accuracy"] == summary["test"]["accuracy"] and report["tpr"] == summary["test"]["tpr"]
    assert [sum(row) for row in report["confusion"]] == report["support"]
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == sum(report["support"]) and list(rows[0])[:5] == [
        "index", "label", "label_name", "predicted", "predicted_name"]
    assert sum(r["label"] == r["predicted"] for r in rows) / len(rows) == pytest.approx(report["accuracy"])
    logits = [[float(r[f"logit_{n}"]) for n in report["class_names"]] for r in rows]
    assert all(max(range(len(z)), key=z.__getitem__) == int(r["predicted"]) for z, r in zip(logits, rows, strict=True))
    assert main(["eval", str(out), "--split", "train", "--json"]) == 0
    train = json.loads(capsys.readouterr().out)
    assert train["split"] == "train" and sum(train["support"]) == 6 * 240  # 300 per class, 60 held out
    assert main(["eval", str(out), "--predictions", str(tmp_path / "no" / "such" / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "p.csv" in err and "folder does not exist" in err


def test_version_and_print_config(tmp_path, capsys, monkeypatch):
    from adaptive_lb import __version__
    from adaptive_lb.config import load_config

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"adaptive-lb {__version__}"
    monkeypatch.chdir(tmp_path)
    assert main(["train", SYNTH, "train.epochs=7", "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert load_config(tmp_path / "printed.yaml") == load_config(SYNTH, ["train.epochs=7"])
    assert list(tmp_path.iterdir()) == [tmp_path / "printed.yaml"], "--print-config trains and writes nothing"


def _bad(args, capsys, tmp_path):
    out = tmp_path / "never"
    rc = main(["train", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("adaptive-lb: error: ")
    assert not out.exists(), "nothing may be written on bad input"
    return err


# one end-to-end case per family; every config message is checked at config level in tests/test_config.py
@pytest.mark.parametrize("overrides, fragment", [
    (["train.epocs=3"], "unknown config key 'train.epocs'"),                           # unknown key
    (["train.epochs=abc"], "train.epochs: expected int"),                              # wrong type
    (["optim.lr=-1"], "optim.lr: -1.0 is out of range"),                               # out of range
    (["data.name=mnist"], "'mnist' is not one of"),                                    # unknown dataset
    (["loss.name=ldam", "data.sampler=oversample"], "corrects for the class counts twice"),  # combination
    (["model.name=vgg99"], "unknown model 'vgg99'"),
    (["data.name=fashion_mnist", "data.root=/nonexistent/fm"], "Fashion-MNIST files not found"),
    (["train.device=cuda:7"], "no CUDA GPU is visible"),
    (["controller.weights=[1, 2]"], "has 2 entries but the data has"),
    (["data.synthetic.per_class=4", "data.heldout_fraction=0.01"], "held-out"),
])
def test_bad_config_values(overrides, fragment, capsys, tmp_path):
    assert fragment in _bad([SYNTH, *overrides], capsys, tmp_path)


def test_malformed_yaml_and_missing_config(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    assert "not valid YAML" in _bad([str(bad)], capsys, tmp_path)
    assert "not found" in _bad([str(tmp_path / "none.yaml")], capsys, tmp_path)


def test_out_dir_that_is_not_empty_is_refused(capsys, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    assert main(["train", SYNTH, "--out", str(out), "--quiet"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize("make, fragment", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "is not a run dir"),
    (lambda d: (d.mkdir(), (d / "config.yaml").write_text("{}\n")), "has no checkpoint.pt"),
])
def test_resume_and_eval_on_bad_folders(make, fragment, capsys, tmp_path):
    folder = tmp_path / "r"
    make(folder)
    for argv in (["train", "--resume", str(folder)], ["eval", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_config_beside_it(capsys, tmp_path):
    assert main(["train", SYNTH, "--resume", str(tmp_path)]) == 2
    assert "drop the config" in capsys.readouterr().err


# Runs `adaptive-lb train ARGS` in a child process that, right after epoch STOP's metrics line and checkpoint
# are written, creates MARKER and blocks: the test waits for that event (not for a time), then kills or
# interrupts it at exactly that point, however fast or loaded the machine is.
PAUSING_TRAIN = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as on a terminal, even if the runner ignores SIGINT
from adaptive_lb.rundir import RunDirWriter
marker, stop = Path(sys.argv[1]), int(sys.argv[2])
write = RunDirWriter.on_epoch_end
def on_epoch_end(self, trainer, record):
    write(self, trainer, record)
    if record["epoch"] == stop:
        marker.touch()
        time.sleep(3600)  # held here until the test's signal arrives
RunDirWriter.on_epoch_end = on_epoch_end
from adaptive_lb.cli import main
sys.exit(main(["train", *sys.argv[3:]]))
"""


def _train_paused_after(stop, args, cwd, timeout=300):
    """A training child process held right after epoch ``stop`` was checkpointed."""
    marker = cwd / f"paused-{stop}"
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_TRAIN, str(marker), str(stop), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before epoch {stop}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training did not reach epoch {stop} within {timeout} s")
        time.sleep(0.05)
    return proc


def _strip(lines):
    return [{k: v for k, v in json.loads(x).items() if k not in ("time_s", "train_images_per_s")} for x in lines]


def test_sigkill_then_resume_gives_the_same_final_metrics(tmp_path, fmnist_available):
    args = [FMNIST, "data.subset_per_class=300", "data.test_subset_per_class=100", "train.epochs=5", "--quiet"]
    full = run_cli("train", *args, "--out", str(tmp_path / "full"), cwd=tmp_path)
    assert full.returncode == 0, full.stderr

    out = tmp_path / "killed"
    proc = _train_paused_after(2, [*args, "--out", str(out)], tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    with open(out / "metrics.jsonl", "a") as fh:  # as if killed while writing epoch 3's line
        fh.write('{"epoch": 3, "pass": 1, "train_lo')

    res = run_cli("train", "--resume", str(out), "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", out))
    assert a["heldout"] == b["heldout"] and a["test"] == b["test"]
    full_lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert _strip((out / "metrics.jsonl").read_text().splitlines()) == _strip(full_lines)


def test_ctrl_c_keeps_the_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = _train_paused_after(1, [SYNTH, "train.epochs=3", "--out", str(out), "--quiet"], tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave the paused child behind, whatever failed
    assert proc.returncode == 130
    assert f"interrupted; checkpoint of epoch 1 kept; continue with: adaptive-lb train --resume {out}" in err
    assert "Traceback" not in err
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()


def test_fetch_reports_local_files(tmp_path, capsys):
    from test_datasets import write_fake_fashion_mnist

    write_fake_fashion_mnist(tmp_path / "fm")
    assert main(["fetch", "fashion_mnist", "--root", str(tmp_path / "fm")]) == 0
    assert "40 train and 20 test images, 10 classes" in capsys.readouterr().out
    assert main(["fetch", "fashion_mnist", "--root", str(tmp_path / "none")]) == 2
    assert "Fashion-MNIST files not found" in capsys.readouterr().err


def test_nan_loss_stops_with_one_clear_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", SYNTH, "optim.lr=1e8", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptive-lb: error: training loss became nan at epoch 1")
    assert "lower optim.lr" in err and len(err.splitlines()) == 1
    assert not (out / "summary.json").exists()
