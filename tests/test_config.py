from pathlib import Path

import pytest
import yaml

from adaptive_lb.config import RunConfig, dump_config, from_dict, load_config
from adaptive_lb.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


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
    assert set(yaml.safe_load(path.read_text())) == {"name", "data", "model", "optim", "train", "controller"}


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
