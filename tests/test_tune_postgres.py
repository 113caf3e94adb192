"""A study shared through a real PostgreSQL server, started by the test on loopback in a temporary folder.

`make test` installs Debian's postgresql when it is missing; without it these tests fail under
ADAPTIVE_LB_REQUIRE_POSTGRES=1 (set by .ci/run) and are skipped elsewhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, cli_env

WORKER = ["data.synthetic.num_classes=4", "data.synthetic.per_class=100", "data.synthetic.image_size=12",
          "model.width=4", "train.batch_size=32", "--quiet", "--no-final"]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port>, trust auth; stopped after the module."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("ADAPTIVE_LB_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql (make test does)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="adaptive_lb_pg_", dir="/tmp")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = f"{root}/data", _free_port()
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-l", f"{root}/log", "-w", "-t", "60", "-o",
                    f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _config(tmp_path: Path, epochs: int) -> str:
    raw = {"base": str(ROOT / "configs" / "synthetic.yaml"),
           "controller": {"name": "damped", "warmup_epochs": 1, "margin_gain": 0.1},
           "train": {"threads": 1, "epochs": epochs},
           "tune": {"reference_accuracy": 0.2, "heartbeat_s": 1, "grace_s": 2, "startup_trials": 1,
                    "params": {"controller.damping": {"low": 0.1, "high": 1.0}}}}
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _worker(cfg: str, url: str, study: str, trials: int, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adaptive_lb", "tune", cfg, *WORKER, "--trials", str(trials),
                             "--storage", url, "--study", study], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _storage(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def test_two_workers_share_one_study(tmp_path, postgres_url):
    cfg = _config(tmp_path, epochs=2)
    workers = [_worker(cfg, postgres_url, "shared", n, tmp_path) for n in (3, 4)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=_storage(postgres_url)).trials
    assert len(trials) == 7  # exactly the sum asked for
    assert sorted(t.number for t in trials) == list(range(7))  # none lost, none duplicated
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials


def test_killed_worker_trial_is_failed_and_retried(tmp_path, postgres_url):
    cfg = _config(tmp_path, epochs=40)
    victim = _worker(cfg, postgres_url, "killed", 1, tmp_path)
    storage = _storage(postgres_url)
    deadline = time.time() + 120
    running = None
    while time.time() < deadline and running is None:  # wait until its trial is mid-way
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:
            continue
        running = next((t for t in study.trials if t.state.name == "RUNNING" and t.user_attrs.get("epoch", 0) >= 2),
                       None)
    assert running is not None, "the worker never got a trial running"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(3)  # > grace_s: its heartbeat is now stale
    rescuer = _worker(cfg, postgres_url, "killed", 1, tmp_path)
    _, err = rescuer.communicate(timeout=300)
    assert rescuer.returncode == 0, err
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert trials[running.number].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == running.params
    assert len(trials) == 2
    assert f"retried as #{retried[0].number}" in (tmp_path / "studies" / "killed" / "study.md").read_text()
