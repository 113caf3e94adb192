from pathlib import Path

import pytest
import yaml

from adaptive_lb.config import RunConfig, dump_config, from_dict, load_config, to_dict
from adaptive_lb.errors import ConfigError

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
    ("data.imbalance_ratio=0.5", "must be >= 1.0"),
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
])
def test_bad_values_raise_one_clear_error(tmp_path, override, fragment):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


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


def test_w_min_above_w_max_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("controller: {w_min: 0.9, w_max: 0.5}\n")
    with pytest.raises(ConfigError, match=r"controller.w_min \(0.9\) is above controller.w_max \(0.5\)"):
        load_config(path)


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


def test_method_configs_differ_from_the_main_one_only_in_controller_and_name():
    main = to_dict(load_config(ROOT / "configs/fashion_mnist.yaml"))
    for other in ("erm", "two_pass", "cdb"):
        cfg = to_dict(load_config(ROOT / f"configs/fashion_mnist_{other}.yaml"))
        assert {k for k in main if main[k] != cfg[k]} == {"name", "controller"}, other
