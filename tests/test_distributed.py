"""Multi-process training on the CPU with gloo: shards, exact all-reduced counts, ranks that agree, resume.

The spawned ranks and CLI runs are tiny (a few hundred images, width-4 CNN, one thread each): they prove
behaviour, not speed. bench/scale.py --ddp measures images/s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, cli_env, run_cli, synthetic_config

from adaptive_lb.data import BatchLoader, build_data
from adaptive_lb.distributed import batch_part, shard_range

FMNIST = str(ROOT / "configs" / "fashion_mnist.yaml")
TINY_FMNIST = ["data.subset_per_class=30", "data.test_subset_per_class=11", "train.epochs=3", "train.threads=1",
               "train.batch_size=32", "model.width=4", "controller.warmup_epochs=0", "--quiet", "--no-plots"]
# the loop acting from the first epoch, so the controller's actions have something to agree on
LOOP = {"name": "damped", "warmup_epochs": 0, "margin_gain": 0.5, "damping": 0.5}


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (8, 3), (101, 4)])
def test_shards_are_disjoint_cover_everything_and_differ_by_at_most_one(n, world):
    ranges = [shard_range(n, r, world) for r in range(world)]
    assert [i for lo, hi in ranges for i in range(lo, hi)] == list(range(n))  # in order, each once
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_rank_batches_together_are_the_one_process_batches():
    cfg = synthetic_config(data={"synthetic": {"num_classes": 4, "per_class": 25, "image_size": 8}})
    data = build_data(cfg.data, 0)
    zero, one = torch.zeros(1), torch.ones(1)
    single = BatchLoader(data.train, zero, one, 13, num_classes=4)
    ranks = [BatchLoader(data.train, zero, one, 13, num_classes=4, shard=(r, 3)) for r in range(3)]
    whole = [y for _, y in single.batches(torch.Generator().manual_seed(5))]
    parts = [[y for _, y in loader.batches(torch.Generator().manual_seed(5))] for loader in ranks]
    tail = len(data.train) % 13
    assert 0 < tail < 3  # the case a rank would get nothing: the tail is skipped
    assert len(ranks[0]) == len(whole) - 1 == len(parts[0]) == len(parts[2])
    for i, y in enumerate(whole[:-1]):
        assert torch.equal(torch.cat([p[i] for p in parts]), y)
    assert batch_part(32, 48, 1, 3) == (38, 43)  # 16 images: 6, 5, 5


# ------------------------------------------------------------------------------------------ spawned ranks
def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: the confusion of the untrained model on every split, then two epochs of the loop."""
    from adaptive_lb import distributed
    from adaptive_lb.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    distributed.init_distributed("cpu")  # joined as the CLI joins, so exit_process below knows to skip finalising
    try:
        cfg = _spawn_config()
        trainer = Trainer(cfg, build_data(cfg.data, cfg.train.seed))
        fixed = {split: trainer.confusion(split) for split in ("heldout", "select", "test")}
        logits = trainer.logits("heldout")
        summary = trainer.fit()
        torch.save({"fixed": fixed, "logits": logits, "summary": summary, "balancer": trainer.balancer.state_dict(),
                    "model": trainer.model.state_dict(), "ema": trainer.ema.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        distributed.teardown()
    # leave as the CLI does: gloo's threads, kept alive by DDP, abort a finalising interpreter now and then
    distributed.exit_process(0)


def _spawn_config():
    # odd-sized held-out, select and test splits, several eval batches per shard
    return synthetic_config(
        data={"heldout_fraction": 0.2, "select_fraction": 0.35, "test_subset_per_class": 0,
              "synthetic": {"num_classes": 3, "per_class": 100, "image_size": 10}},
        train={"epochs": 2, "eval_batch_size": 8, "ema_decay": 0.9},
        controller=LOOP, posthoc={"method": "equalise", "sweeps": 2})


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_all_reduced_confusion_equals_the_one_process_count_on_odd_splits(two_ranks):
    from adaptive_lb.trainer import Trainer

    cfg = _spawn_config()
    single = Trainer(cfg, build_data(cfg.data, cfg.train.seed))  # same seed: the same untrained model
    for split in ("heldout", "select", "test"):
        n = len(single.data.splits()[split])
        assert n % 2 == 1  # one rank holds one image more: no padding, no duplicate
        expected = single.confusion(split)
        for rank in two_ranks:
            assert torch.equal(rank["fixed"][split], expected)
            assert int(rank["fixed"][split].sum()) == n
    z, y = single.logits("heldout")
    for rank in two_ranks:  # gathered in rank order = the split's order
        assert torch.equal(rank["logits"][1], y) and torch.allclose(rank["logits"][0], z, atol=1e-5)


def test_ranks_take_the_same_actions_and_end_with_the_same_model(two_ranks):
    a, b = two_ranks
    assert same(a["balancer"], b["balancer"])  # controller state, action, steps, calibration biases: bit for bit
    weights, offsets = a["balancer"]["action"][0], a["balancer"]["action"][2]
    assert not torch.allclose(weights, torch.ones_like(weights)) and offsets.abs().max() > 0  # the loop acted
    assert a["balancer"]["steps"] == 2
    assert a["summary"] == b["summary"]  # metrics, post-hoc biases fitted on all ranks' select logits
    assert same(a["model"], b["model"]) and same(a["ema"], b["ema"])  # parameters and BatchNorm buffers


def same(a: object, b: object) -> bool:
    """Nested dicts, lists and tensors equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return a == b


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def full_run(tmp_path_factory, fmnist_available) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("full")
    res = run_cli("train", FMNIST, *TINY_FMNIST, "--nproc", "2", "--out", "run", cwd=cwd)
    return cwd, res


def test_two_process_run_through_the_cli_writes_one_run_dir(full_run):
    cwd, res = full_run
    assert res.returncode == 0, res.stderr
    assert [p.name for p in cwd.iterdir()] == ["run"]
    out = cwd / "run"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "checkpoint.pt", "model.pt",
                                         "summary.json"}
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"] == {"train": 270, "heldout": 10, "select": 20, "test": 110}
    assert sum(map(sum, summary["confusion"]["test"])) == 110  # every test image once over both ranks
    assert res.stdout.count("run dir:") == 1 and res.stdout.count("training small_cnn") == 1  # rank 0 alone speaks
    assert "Traceback" not in res.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    res = run_cli("train", FMNIST, "--nproc", "2", "train.epochs=0", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("adaptive-lb: error:") == 1 and "train.epochs" in res.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").touch()
    res = run_cli("train", FMNIST, "--nproc", "2", "--out", "taken", cwd=tmp_path)
    assert res.returncode == 2 and "already exists and is not empty" in res.stderr


PAUSE_RANK0 = """
import os, sys, time
from pathlib import Path
from adaptive_lb.rundir import RunDirWriter
write = RunDirWriter.on_epoch_end
def on_epoch_end(self, trainer, record):
    write(self, trainer, record)
    if record["epoch"] == int(os.environ["PAUSE_AT"]):
        Path(os.environ["PAUSE_MARKER"]).touch()
        time.sleep(3600)  # rank 1 waits in the next epoch's first all-reduce until the kill
RunDirWriter.on_epoch_end = on_epoch_end
from adaptive_lb.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_killed_two_process_run_resumes_exactly(tmp_path, full_run):
    """torchrun itself (not --nproc) runs 2 ranks; rank 0 pauses after epoch 1's checkpoint; the whole job is
    SIGKILLed; `--resume --nproc 2` then ends exactly where the uninterrupted 2-process run ended."""
    script, marker = tmp_path / "pause.py", tmp_path / "paused"
    script.write_text(PAUSE_RANK0)
    env = {**cli_env(), "PAUSE_AT": "1", "PAUSE_MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           FMNIST, *TINY_FMNIST, "--out", "run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "rank 0 did not reach the end of epoch 1"
            time.sleep(0.05)
    finally:  # the launcher and both ranks (torchrun starts each in a session of its own), as a crash would
        for pid in [proc.pid, *children(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
    out = tmp_path / "run"
    assert not (out / "summary.json").exists()
    res = run_cli("train", "--resume", str(out), "--nproc", "2", "--quiet", "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    full = full_run[0] / "run"
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, out))
    assert {k: v for k, v in a.items() if k != "config"} == {k: v for k, v in b.items() if k != "config"}
    strip = [{k: v for k, v in json.loads(x).items() if k not in ("time_s", "train_images_per_s")}
             for d in (full, out) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip[:3] == strip[3:]


@pytest.mark.parametrize("joined", [False, True])
def test_exit_process_flushes_and_keeps_the_exit_code(joined):
    """A process that joined a group leaves by os._exit (gloo's threads would abort the interpreter's final
    clean-up): what it printed still arrives, its exit code is kept, and a plain process exits normally
    (its atexit hooks run)."""
    code = ("import atexit, sys; from adaptive_lb import distributed as d; "
            "atexit.register(lambda: print('atexit ran', file=sys.stderr)); "
            f"d._joined = {joined}; print('last words', end=''); d.exit_process(3)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert res.returncode == 3 and res.stdout == "last words"
    assert ("atexit ran" in res.stderr) is not joined
