"""The N·C post-hoc fitter against the original N·C² one, kept here as the slow reference: same biases, bit for
bit, on random problems full of ties (integer logits tie as bf16 ones do)."""

import pytest
import torch

from adaptive_lb.metrics import per_class_recall
from adaptive_lb.posthoc import GRID, ArgmaxState, _objective, equalising_biases


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny ops: with 2 threads on a busy 2-core machine each op waits for the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_biases(logits: torch.Tensor, labels: torch.Tensor, sweeps: int = 8,
                     spread_weight: float = 1.0) -> torch.Tensor:
    """The fitter as it was before the N·C rewrite: an (N, C) copy per class and sweep."""
    z = logits.double()
    num = z.shape[1]
    bias = torch.zeros(num, dtype=torch.float64)
    best = float(_objective(per_class_recall(z.argmax(dim=1) == labels, labels, num)[:, None], spread_weight))
    radius = float(z.std()) or 1.0
    for _ in range(sweeps):
        for c in range(num):
            values = bias[c] + torch.linspace(-radius, radius, GRID, dtype=torch.float64)
            scores = _objective(reference_recall(z + bias, labels, c, values - bias[c]), spread_weight)
            k = int(scores.argmax())
            if float(scores[k]) > best + 1e-12:
                best, bias[c] = float(scores[k]), values[k]
        radius /= 2
    return (bias - bias.mean()).float()


def reference_recall(zb: torch.Tensor, labels: torch.Tensor, c: int, shifts: torch.Tensor) -> torch.Tensor:
    others = zb.clone()
    others[:, c] = float("-inf")
    top, arg = others.max(dim=1)
    zc = zb[:, c:c + 1] + shifts[None, :]
    is_c = (zc > top[:, None]) | ((zc == top[:, None]) & (c < arg)[:, None])
    pred = torch.where(is_c, torch.full_like(arg, c)[:, None], arg[:, None])
    return per_class_recall(pred == labels[:, None], labels, zb.shape[1])


def random_problem(seed: int, num: int, per_class: int, integer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num).repeat_interleave(per_class)
    if integer:  # values in {0, 1, 2, 3}: ties everywhere, between classes and with the candidate shifts
        logits = torch.randint(0, 4, (len(labels), num), generator=g).float()
        logits[torch.arange(len(labels)), labels] += torch.randint(0, 2, (len(labels),), generator=g).float()
    else:
        logits = torch.randn(len(labels), num, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, num)
        logits -= torch.linspace(0, 1.5, num)  # later classes under-predicted: there is something to fit
    return logits, labels


@pytest.mark.parametrize("seed", range(12))
def test_same_biases_as_the_reference_fitter(seed):
    num = [2, 3, 5, 8, 13, 30][seed % 6]
    logits, labels = random_problem(seed, num, per_class=[3, 7, 20][seed % 3], integer=seed % 2 == 0)
    sweeps, sw = 1 + seed % 5, [0.5, 1.0, 3.0][seed % 3]
    assert torch.equal(equalising_biases(logits, labels, sweeps, sw), reference_biases(logits, labels, sweeps, sw))


def test_same_biases_on_float64_logits_with_uneven_classes():
    g = torch.Generator().manual_seed(99)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([40, 5, 17, 1, 9])])
    logits = torch.randint(-2, 3, (len(labels), 5), generator=g).double() / 2  # halves: exact sums, many ties
    assert torch.equal(equalising_biases(logits, labels, 6), reference_biases(logits, labels, 6))


def test_state_follows_argmax_through_moves():
    """After any sequence of bias moves the kept top two are those of z + b, and candidate recall equals
    argmax's own for every shift (halves on integer logits: ties at every step)."""
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(6).repeat_interleave(15)
    logits = torch.randint(0, 3, (90, 6), generator=g).double()
    state = ArgmaxState(logits, labels)
    shifts = torch.arange(-4, 5, dtype=torch.float64) / 2
    for step in range(40):
        c = int(torch.randint(0, 6, (1,), generator=g))
        value = torch.randint(-4, 5, (1,), generator=g) / 2 if step % 3 else torch.randn(1, generator=g)
        state.move(c, float(value))
        zb = logits + torch.from_numpy(state.bias)
        top, second = zb.max(dim=1), zb.clone()
        second[torch.arange(len(zb)), top.indices] = float("-inf")
        kept = [torch.from_numpy(a) for a in (state.v1, state.i1, state.v2, state.i2)]
        assert all(torch.equal(a, b) for a, b in zip(kept, (*top, *second.max(dim=1)), strict=True)), step
        hits = per_class_recall(top.indices == labels, labels, 6) * torch.from_numpy(state.support)
        assert torch.equal(torch.from_numpy(state.hits), hits), step
        c = step % 6
        assert torch.equal(state.candidate_recall(c, shifts), reference_recall(zb, labels, c, shifts)), step
