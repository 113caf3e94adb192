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


FAKE_SYLLABLES = ("ka", "ri", "mo", "ne", "la", "su", "to", "vi", "de", "an", "el", "or", "ba", "ke", "lu", "mi")


def fake_candidates(countries: list[str], top_k: int, min_share: float) -> dict:
    """A tiny stand-in for names-dataset's candidate table: country i builds its names from 6 syllables,
    4 of them shared with its neighbour, so neighbouring classes overlap (as language groups do)."""
    from adaptive_lb.data.names import country_label

    out = {}
    for i, code in enumerate(countries):
        syl = [FAKE_SYLLABLES[(2 * i + k) % len(FAKE_SYLLABLES)] for k in range(6)]
        first = [(a + b).capitalize() for a in syl for b in syl]                      # 36
        last = [(a + b + c).capitalize() for a in syl for b in syl for c in syl[:3]]  # 108
        out[code] = {"label": country_label(code), "first": [[n, r + 1] for r, n in enumerate(first[:top_k])],
                     "last": [[n, r + 1] for r, n in enumerate(last[:top_k])]}
    chars = {ch for e in out.values() for kind in ("first", "last") for n, _ in e[kind] for ch in n}
    return {"source": "fake", "alphabet": "".join(sorted(chars | {" "})), "countries": out}


@pytest.fixture
def fake_names(monkeypatch, tmp_path):
    """names-dataset replaced by ``fake_candidates``; the cache lands in ``tmp_path/data/names`` (cwd is
    ``tmp_path``, so ``data.root=""`` works). Returns the list of calls to the source."""
    calls = []

    def source(countries, top_k, min_share):
        calls.append((tuple(countries), top_k, min_share))
        return fake_candidates(countries, top_k, min_share)

    monkeypatch.setattr("adaptive_lb.data.names.extract_candidates", source)
    monkeypatch.chdir(tmp_path)
    return calls


NAMES_SECTIONS = {  # make_config(**NAMES_SECTIONS): a seconds-long run on fake names, 4 countries
    "data": {"name": "names", "names": {"countries": ["GB", "US", "IE", "ES"], "per_class": 80,
                                        "test_per_class": 30, "top_k": 100}},
    "model": {"name": "char_gru", "width": 8, "embed_dim": 8},
    "augment": {"ops": ["swap", "drop", "insert"]},
}
