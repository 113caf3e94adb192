"""The benchmark suites name configs and overrides that load: a typo there costs hours of training, not seconds."""

import json
import sys
from pathlib import Path

import pytest

from adaptive_lb.config import load_config
from adaptive_lb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import frontier  # noqa: E402  (bench/ is a folder of scripts, not a package)
import store  # noqa: E402

CASES = [(suite, method, value) for suite, methods in frontier.SUITES.items()
         for method, (_, values) in methods.items() for value in values]


@pytest.mark.parametrize(("suite", "method", "value"), CASES)
def test_every_frontier_point_loads_its_config(suite, method, value):
    files, values = frontier.SUITES[suite][method]
    given = "controller.first_pass_tpr=[0.9, 0.8]"  # what resolve_first_pass puts in for the ERM run's TPR
    cfg = load_config([ROOT / f for f in files], [given if v == frontier.FIRST_PASS_FROM_ERM else v
                                                  for v in values[value]])
    assert cfg.train.epochs > 0


def test_loop_ldam_runs_the_loop_on_ldam_and_defers_it_in_d2():
    files, values = frontier.SUITES["fashion_mnist_lt100"]["loop_ldam"]
    s2, d2 = (load_config([ROOT / f for f in files], values[v]) for v in ("s2", "d2"))
    assert (s2.loss.name, s2.loss.max_m, s2.model.head, s2.controller.name) == ("ldam", 0.25, "cosine", "damped")
    assert s2.controller.exponent == 2 and s2.controller.margin_gain == pytest.approx(0.01)
    # d2 differs from s2 only in when the controller starts: DRW's epoch, 80 % of 20
    assert d2.controller.warmup_epochs == 16 == 0.8 * d2.train.epochs
    assert s2.controller.warmup_epochs == 3


def test_frontier_rerenders_from_its_committed_store_without_the_run_folders(tmp_path, monkeypatch, capsys):
    """A new session starts with no runs/: the stored sweeps must rebuild the same results without training,
    and a record made with other settings must not stand in for the run asked for."""
    import shutil

    monkeypatch.setattr(frontier, "ROOT", tmp_path)
    monkeypatch.setattr(store, "STORE", tmp_path / "store")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    argv = ["frontier.py", "--suite", "synthetic", "--seeds", "0", "--jobs", "2", "--tag", "t"]
    monkeypatch.setattr(sys, "argv", argv)
    frontier.main()
    records = sorted(p.relative_to(tmp_path) for p in (tmp_path / "store").rglob("*.pt.gz"))
    assert [str(p) for p in records] == [f"store/frontier_synthetic_t/{m}/{v}/seed0.pt.gz"
                                         for m, v in (("erm", "off"), ("loop", "s0.5"), ("loop", "s1"),
                                                      ("two_pass_erm", "p1"))]
    first = json.loads((tmp_path / "bench/results/frontier_synthetic_t.json").read_text())
    # two_pass_erm trained pass 2 only, from the ERM run's final held-out TPR
    erm, two = (json.loads((tmp_path / f"runs/frontier_synthetic_t/{m}/seed0/metrics.jsonl").read_text()
                           .splitlines()[-1]) for m in ("erm/off", "two_pass_erm/p1"))
    config = (tmp_path / "runs/frontier_synthetic_t/two_pass_erm/p1/seed0/config.yaml").read_text()
    assert two["pass"] == 1 and str(erm["heldout"]["tpr"][0]) in config and len(set(two["class_weights"])) > 1

    shutil.rmtree(tmp_path / "runs")  # the fresh machine
    trained = []
    monkeypatch.setattr(frontier, "train_run", lambda *a: trained.append(a))
    frontier.main()
    again = json.loads((tmp_path / "bench/results/frontier_synthetic_t.json").read_text())
    assert trained == [] and not (tmp_path / "runs").exists()
    assert again["methods"] == first["methods"]

    # settings that cannot change a sweep (logging, the post-hoc ending) change no record's key: nothing trains
    monkeypatch.setattr(sys, "argv", [*argv, "train.log_every=7", "posthoc.sweeps=3"])
    frontier.main()
    assert trained == []

    # a config file edited since its records were made (no override differs): those records are not read as the
    # runs asked for, and the key that differs is named; --no-train then renders the rest and trains nothing
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    overlay = tmp_path / "configs/methods/closed_loop.yaml"
    overlay.write_text(overlay.read_text().replace("damping: 0.3", "damping: 0.6"))
    monkeypatch.setattr(store, "REPO", tmp_path)
    monkeypatch.setattr(sys, "argv", [*argv, "--no-train"])
    capsys.readouterr()
    frontier.main()
    out = capsys.readouterr().out
    assert trained == [] and out.count("controller.damping differ") == 2
    assert "--no-train: leaving out 2 runs" in out and "loop/s0.5/0" in out
    partial = json.loads((tmp_path / "bench/results/frontier_synthetic_t.json").read_text())
    assert set(partial["methods"]) == {"erm", "two_pass_erm"}
    assert partial["methods"]["two_pass_erm"] == first["methods"]["two_pass_erm"]
    monkeypatch.setattr(store, "REPO", ROOT)

    # other settings: every run is trained again (two_pass_erm left out: it would need the ERM run's folder)
    monkeypatch.setattr(sys, "argv", [*argv, "train.epochs=2", "--methods", "loop"])
    capsys.readouterr()
    with pytest.raises(ConfigError):  # (train_run is stubbed, so the sweep finds no run folder)
        frontier.main()
    assert len(trained) == 3 and capsys.readouterr().out.count("stored for other settings") == 3


def test_a_record_key_is_the_resolved_config_less_what_cannot_change_a_sweep():
    base = store.settings(["configs/fashion_mnist.yaml"], [])
    assert base["controller.damping"] == 0.3 and not any(k.startswith(("posthoc.", "data.root")) for k in base)
    # the same config spelt another way is the same key; a field added to the code since a record was made
    # (absent from it) counts only where the run asked for sets it off its default
    same = store.settings(["configs/fashion_mnist.yaml"], ["controller.damping=0.3", "posthoc.spread_weight=2"])
    assert store.changed(base, same) == []
    older = {k: v for k, v in base.items() if k != "train.distill_weight"}
    assert store.changed(older, base) == []
    assert store.changed(older, {**base, "train.distill_weight": 0.5}) == ["train.distill_weight"]
    assert store.changed(base, {**base, "controller.warmup_epochs": 1}) == ["controller.warmup_epochs"]
    # a loop setting of the shared base config changes the loop's key, not ERM's (its static controller reads
    # only its weights); CDB's only where the published CDB reads it (when it starts, not the loop's margins)
    def moves(config: str, edit: str) -> bool:
        return bool(store.changed(store.settings([config], []), store.settings([config], [edit])))

    assert [moves("configs/fashion_mnist_erm.yaml", e) for e in ("controller.warmup_epochs=1",
                                                                  "controller.margin_gain=0.9")] == [False, False]
    assert [moves("configs/fashion_mnist_cdb.yaml", e) for e in ("controller.warmup_epochs=1",
                                                                  "controller.margin_gain=0.9")] == [True, False]
    assert moves("configs/fashion_mnist.yaml", "controller.margin_gain=0.9")
