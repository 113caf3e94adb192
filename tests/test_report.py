"""`adaptive-lb report` and the plots `train` writes: real PNGs, opened and checked for content."""

import json
import shutil
from pathlib import Path

import pytest
from matplotlib.image import imread

from adaptive_lb.cli import main
from adaptive_lb.report import comparison_rows, group_runs, load_run, markdown_table

SYNTH = str(Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml")
QUICK = ["train.epochs=2", "data.synthetic.per_class=120", "controller.name=damped", "controller.warmup_epochs=0",
         "controller.margin_gain=0.3", "--quiet"]


def assert_real_png(path, min_h=250, min_w=350):
    """A PNG of a sensible size that is not blank: many colours, a fair share of non-background pixels."""
    img = imread(path)  # (H, W, 3 or 4) floats in [0, 1]
    h, w = img.shape[:2]
    assert h >= min_h and w >= min_w, (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    background = (rgb > 0.97).all(axis=1)
    assert (~background).mean() > 0.03, f"{path} is almost blank"
    assert len({tuple(p) for p in (rgb[::7] * 255).round().astype(int).tolist()}) > 20, f"{path} has few colours"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one config, one post-hoc run: made by the CLI, as users make them."""
    base = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in (("loop_s0", ["train.seed=0"]), ("loop_s1", ["train.seed=1"]),
                        ("posthoc", ["posthoc.method=equalise", "posthoc.sweeps=2"])):
        assert main(["train", SYNTH, *QUICK, *extra, "--out", str(base / name)]) == 0
        made[name] = base / name
    return made


def test_train_writes_the_single_run_plots(runs):
    for name in ("confusion.png", "tpr_bars.png", "trajectories.png"):
        assert_real_png(runs["loop_s0"] / "plots" / name)
    summary = json.loads((runs["loop_s0"] / "summary.json").read_text())
    cm = summary["confusion"]["test"]
    assert len(cm) == 6 and sum(map(sum, cm)) == 6 * 40  # synthetic test split: per_class / 3 per class
    assert [row[i] / sum(row) for i, row in enumerate(cm)] == pytest.approx(summary["test"]["tpr"])


def test_no_plots_flag(tmp_path):
    assert main(["train", SYNTH, *QUICK, "--no-plots", "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "plots").exists()


def test_report_one_run_into_a_folder(runs, tmp_path, capsys):
    assert main(["report", str(runs["posthoc"]), "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "posthoc" in out and out.count("wrote") == 3
    for name in ("confusion.png", "tpr_bars.png", "trajectories.png"):
        assert_real_png(tmp_path / "one" / name)


def test_report_several_runs_groups_seeds(runs, tmp_path, capsys):
    assert main(["report", *(str(p) for p in runs.values()), "--out", str(tmp_path / "cmp")]) == 0
    assert_real_png(tmp_path / "cmp" / "compare_tpr.png")
    table = (tmp_path / "cmp" / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| loop_s0") or line.startswith("| posthoc")]
    assert len(rows) == 2 and "| 2 |" in rows[0] and "post-hoc equalise" in rows[1]
    groups = group_runs([load_run(p) for p in runs.values()])
    assert [len(g) for g in groups.values()] == [2, 1]
    acc = [load_run(runs[n]).block()["accuracy"] for n in ("loop_s0", "loop_s1")]
    row = comparison_rows(groups)[0]
    assert row["accuracy"][0] == pytest.approx(sum(acc) / 2)
    assert markdown_table([row]).count("±") == 4


@pytest.mark.parametrize("breakage, fragment", [
    (lambda d: shutil.rmtree(d), "does not exist"),
    (lambda d: (d / "config.yaml").unlink(), "is not a run dir"),
    (lambda d: (d / "summary.json").unlink(), "has no summary.json"),
    (lambda d: (d / "metrics.jsonl").write_text(""), "empty metrics.jsonl"),
    (lambda d: (d / "summary.json").write_text("{not json"), "is damaged"),
])
def test_bad_run_dirs_are_one_line_and_exit_2(runs, tmp_path, capsys, breakage, fragment):
    broken = tmp_path / "broken"
    shutil.copytree(runs["loop_s1"], broken)
    breakage(broken)
    out = tmp_path / "out"
    assert main(["report", str(runs["loop_s0"]), str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists(), "nothing is written when a run dir is bad"
