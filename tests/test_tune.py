"""adaptive-lb tune: search space checks, storages, dead-worker retry, end-to-end studies on synthetic data."""

from __future__ import annotations

import json
import os
import subprocess

import optuna
import pytest
import yaml

from adaptive_lb.cli import main
from adaptive_lb.errors import ConfigError
from adaptive_lb.tune import final
from adaptive_lb.tune.space import load_tune_spec
from adaptive_lb.tune.storage import fail_dead_local_trials, open_storage, redact, resolve_storage
from tests.conftest import ROOT, run_cli

TUNE_SYNTH = str(ROOT / "configs" / "tune" / "synthetic.yaml")
SMALL = ["data.synthetic.num_classes=4", "data.synthetic.per_class=100", "data.synthetic.image_size=12",
         "model.width=4", "train.batch_size=32"]


def write_config(tmp_path, tune: dict, name: str = "study.yaml") -> str:
    """A study config: configs/synthetic.yaml under the damped controller, with tune block ``tune``."""
    raw = {"base": str(ROOT / "configs" / "synthetic.yaml"), "tune": tune, "train": {"threads": 1},
           "controller": {"name": "damped", "warmup_epochs": 1, "margin_gain": 0.1}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def space(**params) -> dict:
    return {"params": params or {"controller.damping": {"low": 0.1, "high": 1.0}}}


# ---------------------------------------------------------------------------------------------- space
def test_space_types_and_values(tmp_path):
    spec = load_tune_spec([TUNE_SYNTH], [])
    assert {p.kind for p in spec.params.values()} == {"float", "int", "categorical"}
    trial = optuna.trial.FixedTrial({"controller.damping": 0.4, "controller.exponent": 2.0,
                                     "controller.margin_gain": 0.15, "controller.warmup_epochs": 2,
                                     "controller.weight_fn": "cdb"})
    values = {name: p.suggest(trial) for name, p in spec.params.items()}
    cfg = spec.config(values)
    assert (cfg.controller.damping, cfg.controller.warmup_epochs, cfg.controller.weight_fn) == (0.4, 2, "cdb")
    assert spec.default_values()["controller.damping"] == 0.5  # the config's own value (controllers default)
    ref = spec.config(reference=True)
    assert (ref.controller.name, ref.loss.name, ref.posthoc.method) == ("static", "ce", "none")


@pytest.mark.parametrize(("params", "fragment"), [
    ({"controller.dampin": {"low": 0.1, "high": 1}}, "unknown parameter 'controller.dampin'; did you mean "
                                                      "'controller.damping'"),
    ({"controller.damping": {"low": 0.5, "high": 0.5}}, "empty range [0.5, 0.5]"),
    ({"controller.damping": {"low": 0.1, "high": 1.5}}, "tune.params.controller.damping.high: 1.5 is out of range"),
    ({"controller.exponent": {"low": 0.0, "high": 2, "log": True}}, "log scale needs low > 0"),
    ({"controller.damping": {"low": 0.1}}, "needs low and high"),
    ({"controller.damping": {"low": 0.1, "high": 1, "scale": 2}}, "unknown key(s) scale"),
    ({"controller.weight_fn": {"choices": ["power_ratio", "sqrt"]}}, "'sqrt' is not one of"),
    ({"controller.weight_fn": {"choices": []}}, "choices must be a non-empty list"),
    ({"controller.weights": {"low": 0.1, "high": 1}}, "is a list, it cannot be searched"),
    ({}, "give at least one parameter"),
])
def test_bad_search_space(tmp_path, params, fragment):
    with pytest.raises(ConfigError) as err:
        load_tune_spec([write_config(tmp_path, {"params": params})], [])
    assert fragment in str(err.value)


def test_bad_tune_block(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'tune.prunr'"):
        load_tune_spec([write_config(tmp_path, {**space(), "prunr": "median"})], [])
    with pytest.raises(ConfigError, match="also searched"):
        load_tune_spec([write_config(tmp_path, {**space(), "trial_overrides": ["controller.damping=0.2"]})], [])
    with pytest.raises(ConfigError, match="grace_s"):
        load_tune_spec([write_config(tmp_path, {**space(), "heartbeat_s": 10, "grace_s": 5})], [])
    with pytest.raises(ConfigError, match=r"tune.guard_delta: 2.0 is out of range, it must be <= 1.0"):
        load_tune_spec([write_config(tmp_path, {**space(), "guard_delta": 2})], [])
    with pytest.raises(ConfigError, match="no tune: block"):
        load_tune_spec([str(ROOT / "configs" / "synthetic.yaml")], [])


def test_train_ignores_the_tune_block(tmp_path):
    from adaptive_lb.config import load_config

    assert load_config(TUNE_SYNTH).controller.name == "damped"


# ---------------------------------------------------------------------------------------------- storage
def test_resolve_storage(tmp_path):
    d = tmp_path / "s"
    assert resolve_storage(None, d, 1) == f"sqlite:///{(d / 'study.db').resolve()}"
    assert resolve_storage(None, d, 2) == f"journal:{(d / 'journal.log').resolve()}"
    d.mkdir()
    (d / "study.db").touch()  # an existing study keeps its storage
    assert resolve_storage(None, d, 2).startswith("sqlite:///")
    assert resolve_storage("postgresql://u:pw@h:5/db", d, 1) == "postgresql+psycopg://u:pw@h:5/db"
    assert redact("postgresql+psycopg://u:pw@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    with pytest.raises(ConfigError, match="not a storage"):
        resolve_storage("redis://x", d, 1)


def test_dead_local_worker_is_failed_and_retried(tmp_path):
    spec = load_tune_spec([TUNE_SYNTH], [])
    storage = open_storage(resolve_storage("journal", tmp_path, 1), spec.tune)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}:")
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}:")
    assert fail_dead_local_trials(study, max_retry=2) == [trial.number]
    trials = study.get_trials()
    assert trials[trial.number].state.name == "FAIL"
    assert "died mid-trial" in trials[trial.number].user_attrs["fail_reason"]
    assert trials[alive.number].state.name == "RUNNING"
    retry = trials[-1]
    assert retry.state.name == "WAITING" and retry.params == trials[trial.number].params
    assert retry.system_attrs["failed_trial"] == trial.number


# ---------------------------------------------------------------------------------------------- CLI
def _bad(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_command_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, space())
    assert "--trials 0" in _bad(["tune", cfg, "--trials", "0"], capsys)
    assert "--n-jobs 0" in _bad(["tune", cfg, "--trials", "2", "--n-jobs", "0"], capsys)
    bad_space = write_config(tmp_path, space(**{"controller.nope": {"low": 0, "high": 1}}), "bad.yaml")
    assert "unknown parameter 'controller.nope'" in _bad(["tune", bad_space, "--trials", "2"], capsys)
    empty = write_config(tmp_path, space(**{"controller.damping": {"low": 0.9, "high": 0.2}}), "empty.yaml")
    assert "empty range" in _bad(["tune", empty, "--trials", "2"], capsys)
    err = _bad(["tune", cfg, "--trials", "2", "--storage", "postgresql://nobody:secret@127.0.0.1:1/none"], capsys)
    assert "cannot be reached" in err and "secret" not in err
    assert not (tmp_path / "studies").exists()  # nothing written half-way


def test_study_end_to_end(tmp_path):
    """Trials run, a bad learning rate gets pruned, best.yaml trains, the study resumes, final step runs."""
    cfg = write_config(tmp_path, {
        "pruner": "median", "startup_trials": 1, "prune_warmup_epochs": 0, "sampler": "random", "seed": 3,
        "guard_delta": 0.1, "final_seeds": [7],
        "params": {"controller.damping": {"low": 0.1, "high": 1.0}, "optim.lr": {"choices": [0.05, 0.0002]}}})
    r = run_cli("tune", cfg, *SMALL, "--trials", "5", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study_dir = tmp_path / "studies" / "study"
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{study_dir / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 5 and "PRUNED" in states and "COMPLETE" in states, states
    assert study.trials[0].params["controller.damping"] == 0.5  # the config's own value goes first
    assert "ERM reference" in r.stdout and study.user_attrs["reference"]["accuracy"] > 0.3
    assert "pruned after epoch" in (study_dir / "study.md").read_text()
    for name in ("optimization_history.png", "param_importances.png"):
        assert (study_dir / "plots" / name).stat().st_size > 10_000
    spec = load_tune_spec([cfg], SMALL)
    best = final.best_trial(study, spec)
    compare = (study_dir / "final" / "compare.md").read_text()
    assert "| tuned" in compare and "| erm" in compare
    assert ("| default" in compare) == (best.params != spec.default_values())
    # best.yaml is a plain run config
    exported = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert exported["controller"]["damping"] == best.params["controller.damping"] and "tune" not in exported
    r2 = run_cli("train", str(study_dir / "best.yaml"), "train.epochs=1", "--quiet", "--no-plots", "--out",
                 str(tmp_path / "again"), cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    # the same command continues the study; a changed space is refused
    r3 = run_cli("tune", cfg, *SMALL, "--trials", "1", "--quiet", "--no-final", cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    assert len(optuna.load_study(study_name="study", storage=f"sqlite:///{study_dir / 'study.db'}").trials) == 6
    r4 = run_cli("tune", cfg, *SMALL, "tune.guard_delta=0.2", "--trials", "1", "--quiet", cwd=tmp_path)
    assert r4.returncode == 2 and "made with another config" in r4.stderr
    r5 = run_cli("tune", cfg, *SMALL, "--final-only", "--quiet", cwd=tmp_path)  # export + final step only
    assert r5.returncode == 0, r5.stderr
    assert "final erm seed 7" in r5.stdout and "kept from an earlier run" in r5.stdout


def test_multi_objective_and_worker_processes(tmp_path):
    """Two worker processes share a journal file; multi mode exports the Pareto front."""
    cfg = write_config(tmp_path, {"mode": "multi", "reference_accuracy": 0.2, "final_seeds": [],
                                  **space(**{"controller.damping": {"low": 0.1, "high": 1.0}})})
    r = run_cli("tune", cfg, *SMALL, "--trials", "4", "--n-jobs", "2", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study_dir = tmp_path / "studies" / "study"
    assert (study_dir / "journal.log").is_file() and (study_dir / "logs" / "worker-1.log").is_file()
    study = optuna.load_study(study_name="study", storage=open_storage(f"journal:{study_dir / 'journal.log'}",
                                                                        load_tune_spec([cfg], []).tune))
    assert len(study.trials) == 4 and all(len(t.values) == 2 for t in study.trials)
    workers = {t.user_attrs["worker"].split(":")[1] for t in study.trials}
    assert len(workers) == 2  # both processes ran trials
    assert (study_dir / "plots" / "pareto_front.png").is_file() and list((study_dir / "pareto").glob("*.yaml"))
    assert json.loads(json.dumps(study.user_attrs["space"]))["controller.damping"]["high"] == 1.0


def test_failed_trials_keep_their_reason_and_the_study_goes_on(tmp_path, capsys, monkeypatch):
    """A learning rate that blows the loss up fails every trial; each is recorded with why, none stops the study."""
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, {"reference_accuracy": 0.2, "final_seeds": [], "enqueue_default": False,
                                  "params": {"optim.lr": {"choices": [1.0e12]}}})
    assert main(["tune", cfg, *SMALL, "train.epochs=1", "--trials", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no complete trial that passes the accuracy guard" in err
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'studies' / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(t.user_attrs["fail_reason"].startswith("NonFiniteLossError") for t in study.trials)
    assert "NonFiniteLossError" in (tmp_path / "studies" / "study" / "study.md").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_study_configs_load(path):
    """Every configs/tune/*.yaml is valid, and its config's own values lie inside its search space."""
    spec = load_tune_spec([str(path)], [])
    assert spec.params
    for name, value in spec.default_values().items():
        assert spec.params[name].contains(value), name


def test_final_runs_are_reused_only_for_the_same_config(tmp_path):
    from dataclasses import replace

    from adaptive_lb.tune.study import train_run
    from tests.conftest import synthetic_config

    cfg = synthetic_config(train={"epochs": 1})
    first = train_run(cfg, tmp_path / "run")
    mtime = (tmp_path / "run" / "summary.json").stat().st_mtime_ns
    assert train_run(cfg, tmp_path / "run")["test"] == first["test"]  # kept
    assert (tmp_path / "run" / "summary.json").stat().st_mtime_ns == mtime
    other = replace(cfg, controller=replace(cfg.controller, name="damped", warmup_epochs=0, margin_gain=0.2))
    train_run(other, tmp_path / "run")  # another config: trained afresh
    assert "damped" in (tmp_path / "run" / "config.yaml").read_text()


def test_trials_average_their_seeds_and_prune_on_the_first(tmp_path):
    """tune.trial_seeds=2: every trial and the ERM reference train seeds 0 and 1; the objective and the guard are
    their means; a pruned trial never trains its second seed."""
    cfg = write_config(tmp_path, {
        "trial_seeds": 2, "pruner": "median", "startup_trials": 1, "prune_warmup_epochs": 0, "sampler": "random",
        "seed": 3, "guard_delta": 0.1, "final_seeds": [],
        "params": {"controller.damping": {"low": 0.1, "high": 1.0}, "optim.lr": {"choices": [0.05, 0.0002]}}})
    r = run_cli("tune", cfg, *SMALL, "--trials", "5", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study_dir = tmp_path / "studies" / "study"
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{study_dir / 'study.db'}")

    def select(path):
        return json.loads((path / "summary.json").read_text())["select"]

    ref = [select(study_dir / name) for name in ("reference", "reference-seed1")]
    assert study.user_attrs["reference"]["accuracy"] == pytest.approx((ref[0]["accuracy"] + ref[1]["accuracy"]) / 2)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned and done
    for t in done:
        runs = [select(study_dir / "trials" / f"trial-{t.number:04d}{tail}") for tail in ("", "-seed1")]
        assert runs[0]["tpr_var"] != runs[1]["tpr_var"]  # two seeds, two different runs
        assert t.value == pytest.approx((runs[0]["tpr_var"] + runs[1]["tpr_var"]) / 2)
        assert t.user_attrs["tpr_var_per_seed"] == pytest.approx([runs[0]["tpr_var"], runs[1]["tpr_var"]])
    for t in pruned:
        assert not (study_dir / "trials" / f"trial-{t.number:04d}-seed1").exists()
    table = (study_dir / "study.md").read_text()
    assert "seeds per trial (means): 0, 1" in table and table.count("per seed ") == len(done)


def test_trial_seeds_may_not_reach_the_final_seeds(tmp_path):
    cfg = write_config(tmp_path, {**space(), "trial_seeds": 3, "final_seeds": [2, 1000]})
    with pytest.raises(ConfigError, match=r"trial_seeds: trials would train seed\(s\) \[2\]"):
        load_tune_spec([cfg], [])
    assert load_tune_spec([cfg], ["train.seed=5"]).trial_seeds() == (5, 6, 7)


def test_study_settings_that_do_not_judge_trials_may_change(tmp_path):
    cfg = write_config(tmp_path, space())
    base = load_tune_spec([cfg], []).fingerprint()
    assert load_tune_spec([cfg], ["tune.final_seeds=[5]", "tune.pruner=hyperband"]).fingerprint() == base
    assert load_tune_spec([cfg], ["tune.guard_delta=0.2"]).fingerprint() != base
    assert load_tune_spec([cfg], ["train.epochs=4"]).fingerprint() != base
    assert load_tune_spec([cfg], ["tune.trial_seeds=1"]).fingerprint() == base  # the default: studies made before
    assert load_tune_spec([cfg], ["tune.trial_seeds=2"]).fingerprint() != base


def test_an_interrupted_trial_is_queued_again(tmp_path):
    """Ctrl-C mid-trial: the trial is marked failed ('interrupted') and a copy waits for the next run."""
    from adaptive_lb.progress import PlainTuneView
    from adaptive_lb.tune import study as st

    class StopAtFirstEpoch(PlainTuneView):
        def trial_epoch(self, record: dict) -> None:
            raise KeyboardInterrupt

    spec = load_tune_spec([write_config(tmp_path, {"reference_accuracy": 0.2, **space()})], SMALL)
    storage = open_storage(resolve_storage("sqlite", tmp_path, 1), spec.tune)
    study = st.open_study(spec, "s", storage)
    view = StopAtFirstEpoch("test", open(os.devnull, "w"))  # noqa: SIM115
    objective = st.Objective(spec, tmp_path, lambda: 0.2, "cpu", view)
    with pytest.raises(KeyboardInterrupt):
        st.run_trials(study, objective, 3, None, journal=False, after_trial=lambda s: None)
    first, queued = study.get_trials()
    assert first.state.name == "FAIL" and first.user_attrs["fail_reason"] == "interrupted"
    assert queued.state.name == "WAITING" and queued.params == first.params
    assert queued.system_attrs["failed_trial"] == first.number
    rows = final.trial_rows(study)  # the table says what waits, not the failed run's epoch and reason
    assert rows[1]["state"] == "waiting" and rows[1]["epochs"] == 0
    assert rows[1]["note"] == f"queued again: the retry of #{first.number}"
    assert rows[0]["note"] == f"interrupted; retried as #{queued.number}"
