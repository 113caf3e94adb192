"""Multi-process training (``torchrun`` / ``adaptive-lb train --nproc N``): process group, ranks, shards, sums.

What is split and what is summed:

- **Training.** ``train.batch_size`` is the *global* batch. Every rank draws the same per-epoch order (seeded from
  (seed, epoch), as one process does) and takes its contiguous part of each global batch (``batch_part``: sizes
  differ by at most one), so one optimiser step sees the images one process would, and the learning rate means
  what it means in one process. DDP averages the ranks' gradients. A last global batch with fewer images than
  ranks is skipped that epoch (at most ``world - 1`` images, other ones every epoch).
- **Evaluation.** Each split is cut into ``world`` disjoint contiguous shards (``shard_range``), no padding;
  confusion counts are summed over ranks (``all_reduce_sum``) and held-out logits gathered in rank order
  (``balancer.gather_rows``), so every image is counted exactly once, on odd-sized splits too.
- **State.** Parameters stay equal on every rank (same init, averaged gradients); BatchNorm running statistics
  are averaged over ranks after every step (``average_buffers``), so the model, its EMA and the controller's
  measurement are the same on every rank and rank 0's checkpoint continues every rank exactly.

Without a process group (``WORLD_SIZE`` unset or 1) every helper is the identity: one process runs as before.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when unset): whether this process is one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` set by torchrun (0 when unset), readable before the process group exists."""
    return int(os.environ.get("RANK", "0") or 0)


def is_distributed() -> bool:
    """An initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes the run dir, the logs and the live display (``RANK`` before the process
    group exists)."""
    return rank() == 0 if is_distributed() else env_rank() == 0


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> torch.device | None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); ``None`` when this is a single process.

    NCCL with ``cuda:LOCAL_RANK`` when CUDA is used (``train.device`` auto or cuda), gloo on the CPU. Returns the
    device this rank trains on (``cuda:LOCAL_RANK`` or ``cpu``).
    """
    if env_world_size() <= 1 or is_distributed():
        return None
    cuda = torch.cuda.is_available() and (device in ("auto", "cuda") or device.startswith("cuda:"))
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    else:
        target = torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": target} if cuda else {}))
    global _joined
    _joined = True
    return target


_joined = False  # this process joined a process group (init_distributed): see exit_process


def exit_process(code: int) -> NoReturn:
    """End the command-line process with ``code``; one that joined a process group skips the interpreter's
    final clean-up (``os._exit`` after flushing).

    Why: constructing DDP keeps the process group alive past ``destroy_process_group`` (torch holds it from
    C++), so gloo's worker threads still run while the interpreter finalises; one that then releases a
    finished collective's tensors needs the GIL of a dying interpreter and aborts the process ("terminate
    called without an active exception", SIGABRT), after a run that wrote everything (about one run in five
    on a loaded 2-core machine; pytorch/pytorch#179291 describes it). Everything of ours is written and closed
    by then (run dir, checkpoint, loggers' ``on_fit_end``).
    """
    if not _joined:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(int(code or 0))


def teardown() -> None:
    """Leave the process group (if any); safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every rank: the ranks decide together whether to go on (one rank's bad input
    would otherwise leave the others waiting in a collective)."""
    if not is_distributed():
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank_``'s contiguous shard of ``n`` items: disjoint, covering, sizes within one.

    ``torch.tensor_split`` sizes: the first ``n % world`` ranks hold one item more. Rank order = item order, so
    gathering the shards in rank order gives the items in their order.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def batch_part(start: int, stop: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """This rank's ``[start, stop)`` within the global batch ``[start, stop)`` of an epoch's order."""
    lo, hi = shard_range(stop - start, rank_, world)
    return start + lo, start + hi


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, in place (integer counts stay exact); ``t`` itself without a process group.
    A CPU tensor under NCCL travels through the GPU and back."""
    if not is_distributed():
        return t
    device = _comm_device()
    if t.device == device:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t
    moved = t.to(device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return t.copy_(moved)


def sum_over_ranks(loss_sum: torch.Tensor, images: int) -> tuple[float, int]:
    """(loss sum, image count) added over ranks: the training loss of the whole job (one collective)."""
    both = torch.stack([loss_sum.detach().double().reshape(()), torch.tensor(float(images), dtype=torch.float64,
                                                                             device=loss_sum.device)])
    both = all_reduce_sum(both)
    return float(both[0]), int(both[1])


def check_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` (set by ``init_distributed``) or the CPU; others are refused."""
    from adaptive_lb.errors import ConfigError

    if device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    if device.type != "cpu":
        raise ConfigError(f"train.device={device}: several processes need CUDA (NCCL) or the CPU (gloo)")
    return device


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when distributed (``model`` itself otherwise).

    ``broadcast_buffers=False``: rank 0's BatchNorm buffers are not pushed at every forward; ``average_buffers``
    averages them after every step instead, so they are equal on every rank when the EMA and checkpoint read them.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:  # torch >= 2.11 name
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@torch.no_grad()
def average_buffers(module: torch.nn.Module) -> None:
    """Average the float buffers (BatchNorm running mean/var) over ranks, in place, in one collective.

    Each rank's BatchNorm updates its running statistics from its own part of the batch; with equal parts the
    average of the running means is exactly the update the global batch gives. Integer buffers
    (``num_batches_tracked``) advance alike on every rank and are left alone.
    """
    if not is_distributed():
        return
    floats = [b for b in module.buffers() if b.is_floating_point()]
    if not floats:
        return
    flat = torch.cat([b.reshape(-1) for b in floats])  # (sum of buffer sizes,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for b in floats:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def _comm_device() -> torch.device:
    """Where collectives' small tensors live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launch(nproc: int, argv: Sequence[str]) -> int:
    """``python -m adaptive_lb ARGV`` in ``nproc`` processes on this machine, as ``torchrun --standalone
    --nproc_per_node NPROC -m adaptive_lb ARGV`` does (same launcher, in this process); returns rank 0's exit
    code (or the first failed rank's): 2 for bad input, 130 after Ctrl-C, as in one process.

    Each worker gets ``OMP_NUM_THREADS`` = CPU cores // ``nproc`` unless set (``train.threads`` still wins).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # rank 0 speaks for the job
    args = get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "--max_restarts=0",
                                         "-m", "adaptive_lb", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        failures = exc.failures  # {global rank: ProcessFailure}
        code = (failures.get(0) or failures[min(failures)]).exitcode
        return code if code > 0 else 128 - code  # killed by a signal: 128 + its number, as a shell reports it
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the launcher itself failed (rendezvous, ports)
        print(f"adaptive-lb: error: could not start {nproc} processes ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
        return 1
    return 0
