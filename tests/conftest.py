"""Shared fixtures: small configs, the local Fashion-MNIST copy, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptive_lb.config import RunConfig, from_dict
from adaptive_lb.data.datasets import fashion_mnist_folders

ROOT = Path(__file__).resolve().parents[1]


def synthetic_config(**sections: dict) -> RunConfig:
    """A seconds-long synthetic run; ``sections`` override parts of it, e.g. train={"epochs": 2}."""
    raw = {
        "data": {"name": "synthetic", "heldout_fraction": 0.2,
                 "synthetic": {"num_classes": 4, "per_class": 120, "image_size": 12}},
        "model": {"name": "small_cnn", "width": 4},
        "train": {"epochs": 3, "batch_size": 32, "log_every": 3, "device": "cpu", "threads": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return from_dict(RunConfig, raw)


@pytest.fixture
def make_config():
    return synthetic_config


@pytest.fixture(scope="session")
def fmnist_available() -> Path:
    """Folder with the real Fashion-MNIST files; `make test` installs them, so missing is a failure."""
    for folder in fashion_mnist_folders(""):
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    pytest.fail("Fashion-MNIST not found: run 'make test' (it installs dataset-fashion-mnist)")


def run_cli(*args: str, cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m adaptive_lb ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "adaptive_lb", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout, **popen)


def cli_env() -> dict:
    """The environment of CLI subprocesses. Same for every run of a test: CPU results depend on threads."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}
