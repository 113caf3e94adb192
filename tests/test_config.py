import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import yaml

from adaptive_lb import config as C
from adaptive_lb.cli import main
from adaptive_lb.config import PRIOR_LOSSES, TPR_CONTROLLERS, RunConfig, Section
from adaptive_lb.config_io import dump_config, from_dict, load_config, to_dict
from adaptive_lb.errors import ConfigError, ConfigWarning

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n")
    cfg = load_config(path, ["optim.lr=1e-3", "train.epochs=3", "data.synthetic.num_classes=7",
                             "controller.weights=[1, 2]", "data.heldout_balanced=false"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 3
    assert cfg.data.synthetic.num_classes == 7
    assert cfg.controller.weights == (1.0, 2.0)
    assert cfg.data.heldout_balanced is False


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS[0], ["train.epochs=2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert set(yaml.safe_load(path.read_text())) == {"name", "data", "model", "optim", "train", "controller",
                                                      "augment", "loss", "posthoc"}


@pytest.mark.parametrize("override, fragment", [
    ("train.epocs=3", "unknown config key 'train.epocs'; did you mean 'train.epochs'"),
    ("bogus.x=1", "unknown config key 'bogus'"),
    ("train.epochs=three", "train.epochs: expected int, got str"),
    ("train.epochs=2.5", "train.epochs: expected int, got float"),
    ("data.heldout_balanced=1", "expected bool"),
    ("optim.lr=-0.1", "optim.lr: -0.1 is out of range, it must be > 0.0"),
    ("data.heldout_fraction=1.0", "data.heldout_fraction: 1.0 is out of range, it must be < 1.0"),
    ("data.heldout_fraction=0", "must be > 0.0"),
    ("data.name=mnist", "data.name: 'mnist' is not one of fashion_mnist, cifar10, cifar100, synthetic"),
    ("train=3", "train: expected a mapping"),
    ("controller.weights=[1, -1]", "every weight must be finite and > 0"),
    ("noequals", "must look like section.key=value"),
    ("controller.damping=0", "controller.damping: 0.0 is out of range, it must be > 0.0"),
    ("controller.damping=1.5", "controller.damping: 1.5 is out of range, it must be <= 1.0"),
    ("controller.name=pid", "controller.name: 'pid' is not one of static, two_pass, cdb, damped"),
    ("controller.weight_fn=softmax", "'softmax' is not one of power_ratio, cdb, exp_gap"),
    ("controller.w_min=1.5", "must be <= 1 <= controller.w_max"),
    ("controller.w_max=0.5", "must be <= 1 <= controller.w_max"),
    ("controller.aug_gain=.nan", "controller.aug_gain: nan is not a finite number"),
    ("controller.w_max=.inf", "controller.w_max: inf is not a finite number"),
    ("controller.exponent=-1", "controller.exponent: -1.0 is out of range"),
    ("augment.ops=[blur]", "augment.ops: unknown op(s) blur"),
    ("augment.backend=gpu", "'gpu' is not one of tensor, albumentations"),
    # moved from tests/test_cli.py, which keeps one end-to-end case per family
    ("data.imbalance_ratio=0.5", "data.imbalance_ratio: 0.5 is out of range, it must be >= 1.0"),
    ("data.sampler=smote", "data.sampler: 'smote' is not one of none, oversample, undersample, oversample_aug"),
    ("controller.beta=1", "controller.beta: 1.0 is out of range, it must be < 1.0"),
    ("controller.beta=-0.1", "controller.beta: -0.1 is out of range, it must be >= 0.0"),
    ("loss.gamma=-1", "loss.gamma: -1.0 is out of range, it must be >= 0.0"),
    ("loss.max_m=0", "loss.max_m: 0.0 is out of range, it must be > 0.0"),
    ("posthoc.sweeps=0", "posthoc.sweeps: 0 is out of range, it must be >= 1"),
    ("posthoc.spread_weight=best", "posthoc.spread_weight: 'best' is not a number or auto"),
    ("posthoc.candidates=[0.5, 0]", "posthoc.candidates: [0.5, 0.0] must be a non-empty list of spread weights > 0"),
])
def test_bad_values_raise_one_clear_error(tmp_path, override, fragment):
    assert fragment in _config_error(tmp_path, [override])


@pytest.mark.parametrize("overrides, fragment", [
    (["controller.name=drw"], "controller drw needs controller.count_weights"),
    (["controller.name=drw", "controller.count_weights=inverse_freq", "controller.drw_epoch=9", "train.epochs=5"],
     "controller.drw_epoch (9) must be below train.epochs (5)"),
    (["controller.weights=[1, 2]", "controller.count_weights=inverse_freq"], "keep one of them"),
    (["model.name=tv:resnet18", "model.head=cosine"], "model.head=cosine works with small_cnn and the CIFAR ResNets"),
    (["controller.w_min=0.9", "controller.w_max=0.5"], "controller.w_min (0.9) is above controller.w_max (0.5)"),
    (["controller.name=damped", "controller.count_weights=effective_number"],
     "controller.count_weights is ignored by controller.name=damped"),
    (["controller.name=cdb", "controller.weights=[1, 2]"], "controller.weights is ignored by controller.name=cdb"),
    (["loss.name=ldam", "data.sampler=undersample"], "loss.name=ldam with data.sampler=undersample corrects"),
])
def test_bad_combinations_raise_one_clear_error(tmp_path, overrides, fragment):
    assert fragment in _config_error(tmp_path, overrides)


def _config_error(tmp_path, overrides):
    """The one-line ConfigError of an empty config file with ``overrides``."""
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n bad: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_frozen():
    cfg = from_dict(RunConfig, {})
    with pytest.raises(AttributeError):
        cfg.train.epochs = 3


def test_base_files_merge_section_by_section(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ntrain: {epochs: 7, seed: 3}\ncontroller: {name: damped}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ntrain: {epochs: 2}\n")
    cfg = load_config(tmp_path / "b.yaml", ["train.batch_size=8"])
    assert (cfg.name, cfg.train.epochs, cfg.train.seed, cfg.train.batch_size) == ("b", 2, 3, 8)
    assert cfg.controller.name == "damped"


@pytest.mark.parametrize("files, fragment", [
    ({"b.yaml": "base: missing.yaml\n"}, "base config"),
    ({"b.yaml": "base: b.yaml\n"}, "is its own base"),
    ({"b.yaml": "base: [1]\n"}, "base: must be a file name"),
])
def test_bad_base_chains(tmp_path, files, fragment):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(tmp_path / "b.yaml")


def test_method_configs_differ_from_the_main_one_only_in_controller_name_and_calibration_strength():
    """The same run but for the controller; each method ends calibrated at its own select-chosen spread weight."""
    main = to_dict(load_config(ROOT / "configs/fashion_mnist.yaml"))
    for other in ("erm", "two_pass", "cdb"):
        cfg = to_dict(load_config(ROOT / f"configs/fashion_mnist_{other}.yaml"))
        assert {k for k in main if main[k] != cfg[k]} <= {"name", "controller", "posthoc"}, other
        assert {k for k in main["posthoc"] if main["posthoc"][k] != cfg["posthoc"][k]} <= {"spread_weight"}, other


# ------------------------------------------------------------------------------------------ built in Python
def test_a_section_built_in_python_checks_its_range():
    with pytest.raises(ConfigError, match=r"^controller\.gap_scale: 0\.0 is out of range, it must be > 0\.0$"):
        C.ControllerConfig(gap_scale=0)


@pytest.mark.parametrize("make, fragment", [
    (lambda: C.OptimConfig(lr=math.nan), "optim.lr: nan is not a finite number"),
    (lambda: C.ControllerConfig(aug_gain=-math.inf), "controller.aug_gain: -inf is not a finite number"),
    (lambda: C.ControllerConfig(weights=(1.0, math.nan)), "controller.weights[1]: nan is not a finite number"),
])
def test_non_finite_floats_are_refused(make, fragment):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == fragment


@pytest.mark.parametrize("make, fragment", [
    (lambda: C.TrainConfig(epochs="3"), "train.epochs: expected int, got str '3'"),
    (lambda: C.TrainConfig(epochs=2.0), "train.epochs: expected int, got float 2.0"),
    (lambda: C.OptimConfig(lr=True), "optim.lr: expected float, got bool True"),
    (lambda: C.DataConfig(download="yes"), "data.download: expected bool, got str 'yes'"),
    (lambda: C.AugmentConfig(ops="flip"), "augment.ops: expected a list, got str 'flip'"),
    (lambda: C.RunConfig(train={"epochs": 3}), "train: expected a TrainConfig section, got dict"),
])
def test_wrong_types_in_python_are_refused(make, fragment):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value).startswith(fragment)


def test_ints_become_floats_and_lists_tuples():
    cfg = C.ControllerConfig(gap_scale=1, weights=[1, 2])
    assert type(cfg.gap_scale) is float and cfg.weights == (1.0, 2.0) and all(type(w) is float for w in cfg.weights)
    assert hash(cfg) == hash(C.ControllerConfig(gap_scale=1.0, weights=(1.0, 2.0)))


BAD_SECTION_VALUE = {  # every section: one bad value and the start of its message
    C.SyntheticConfig: ({"noise": -0.1}, "data.synthetic.noise: -0.1 is out of range, it must be >= 0.0"),
    C.NamesConfig: ({"per_class": 3}, "data.names.per_class: 3 is out of range, it must be >= 4"),
    C.DataConfig: ({"heldout_fraction": 1}, "data.heldout_fraction: 1.0 is out of range, it must be < 1.0"),
    C.ModelConfig: ({"head": "dot"}, "model.head: 'dot' is not one of linear, cosine"),
    C.OptimConfig: ({"momentum": 1.0}, "optim.momentum: 1.0 is out of range, it must be < 1.0"),
    C.TrainConfig: ({"batch_size": 0}, "train.batch_size: 0 is out of range, it must be >= 1"),
    C.LossConfig: ({"scale": 0}, "loss.scale: 0.0 is out of range, it must be > 0.0"),
    C.PosthocConfig: ({"method": "bias"}, "posthoc.method: 'bias' is not one of none, equalise, logit_adjust"),
    C.AugmentConfig: ({"workers": -1}, "augment.workers: -1 is out of range, it must be >= 0"),
    C.ControllerConfig: ({"damping": 1.5}, "controller.damping: 1.5 is out of range, it must be <= 1.0"),
    C.RunConfig: ({"name": 3}, "name: expected str, got int 3"),
}


@pytest.mark.parametrize("cls", list(BAD_SECTION_VALUE), ids=lambda c: c.__name__)
def test_every_section_checks_itself(cls):
    kwargs, message = BAD_SECTION_VALUE[cls]
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert str(err.value) == message
    cls()  # the defaults are valid
    with pytest.raises(ConfigError):  # dataclasses.replace builds a checked section too
        dataclasses.replace(cls(), **kwargs)


def test_every_section_of_the_module_is_covered_and_has_its_dotted_path():
    sections = {v for v in vars(C).values() if isinstance(v, type) and issubclass(v, Section) and v is not Section}
    assert sections == set(BAD_SECTION_VALUE)
    assert all(message.startswith(f"{cls.path}.") or cls is C.RunConfig
               for cls, (_, message) in BAD_SECTION_VALUE.items())


def test_yaml_spellings_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 1e-3}\ncontroller: {weights: [1, '2e0'], gap_scale: 1}\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-3 and cfg.controller.weights == (1.0, 2.0) and type(cfg.controller.gap_scale) is float


# ------------------------------------------------------------------------------------------ combinations
@pytest.mark.parametrize("name", TPR_CONTROLLERS)
@pytest.mark.parametrize("key, value, unset", [("count_weights", "inverse_freq", "none"),
                                               ("weights", (1.0, 2.0), "[]")])
def test_count_weights_under_a_tpr_driven_controller_are_refused(name, key, value, unset):
    with pytest.raises(ConfigError) as err:
        C.ControllerConfig(name=name, **{key: value})
    assert str(err.value) == (f"controller.{key} is ignored by controller.name={name}, which sets weights from "
                              f"held-out TPR: use controller.name=static (or drw), or controller.{key}={unset}")
    C.ControllerConfig(name="static", **{key: value})  # static reads them


@pytest.mark.parametrize("loss", PRIOR_LOSSES)
@pytest.mark.parametrize("sampler", ["oversample", "undersample", "oversample_aug"])
def test_a_prior_based_loss_under_a_resampler_is_refused(loss, sampler):
    with pytest.raises(ConfigError) as err:
        RunConfig(loss=C.LossConfig(name=loss), data=C.DataConfig(sampler=sampler))
    message = str(err.value)
    assert f"loss.name={loss} with data.sampler={sampler} corrects for the class counts twice" in message
    assert message.endswith("use data.sampler=none or loss.name=ce")
    RunConfig(loss=C.LossConfig(name="focal"), data=C.DataConfig(sampler=sampler))  # not prior-based: fine


def test_shipped_overlays_that_would_correct_twice_are_refused():
    methods = ROOT / "configs" / "methods"
    with pytest.raises(ConfigError, match="loss.name=logit_adjusted with data.sampler=oversample"):
        load_config([ROOT / "configs" / "fashion_mnist_lt100.yaml", methods / "logit_adjusted.yaml",
                     methods / "oversample.yaml"])


def test_copy_aug_without_oversample_aug_warns():
    with pytest.warns(ConfigWarning, match=r"^data.copy_aug=0.8 does nothing with data.sampler=oversample: only "
                                           r"oversample_aug augments extra copies"):
        C.DataConfig(sampler="oversample", copy_aug=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.DataConfig(sampler="oversample_aug", copy_aug=0.8)  # used
        C.DataConfig(sampler="oversample")                     # left at its default


def test_the_cli_prints_a_config_warning_as_one_line(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"name": "synthetic", "heldout_fraction": 0.25, "copy_aug": 0.8,
                 "synthetic": {"num_classes": 3, "per_class": 16, "image_size": 8}},
        "model": {"width": 4}, "train": {"batch_size": 16, "device": "cpu", "threads": 1}}))
    out = tmp_path / "run"
    assert main(["train", str(path), "train.epochs=1", "--quiet", "--no-plots", "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "warning" in line]
    assert warned == ["adaptive-lb: warning: data.copy_aug=0.8 does nothing with data.sampler=none: only "
                      "oversample_aug augments extra copies; set data.sampler=oversample_aug or drop copy_aug"]


def test_a_loop_that_never_acts_warns():
    from adaptive_lb.errors import ConfigWarning

    with pytest.warns(ConfigWarning, match="closed loop never acts"):
        from_dict(RunConfig, {"controller": {"name": "damped", "warmup_epochs": 3}, "train": {"epochs": 3}})
