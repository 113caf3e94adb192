"""Post-hoc corrections: per-class logit biases ``b (C,)`` added at prediction time, after training.

- ``equalise``: biases fitted on the held-out split to even out its per-class TPR without giving up its
  mean (the cheap baseline the closed loop has to beat: one ERM run, then a fit on cached logits);
- ``logit_adjust``: ``b = -tau * log(prior)`` (Menon et al., ICLR 2021, post-hoc form).

Pure functions of logits and labels; the trainer caches the held-out logits once and calls them.
"""

from __future__ import annotations

import numpy as np
import torch

from adaptive_lb.losses import log_prior
from adaptive_lb.metrics import per_class_recall

GRID = 21            # bias values tried per class and sweep
MIN_GAIN = 1e-12     # a move is taken only if it raises the objective by more than this
SLACK = 1e-10        # float64 rounding allowance of the cheap score bound (actual errors are ~1e-15)
BLOCK = 2_000_000    # elements of (samples x classes) materialised at once


def equalising_biases(logits: torch.Tensor, labels: torch.Tensor, sweeps: int = 8,
                      spread_weight: float = 1.0) -> torch.Tensor:
    """Centred biases ``(C,)`` maximising ``mean(tpr) - spread_weight * std(tpr)`` of ``argmax(logits + b)``.

    TPR is a step function of ``b``, so there is no gradient: coordinate ascent instead. Each sweep tries,
    for every class in turn, ``GRID`` values of its bias around the current one (all at once, vectorised)
    and keeps the best; the search radius starts at one standard deviation of the logits and halves every
    sweep. A move is taken only if it strictly improves the objective, so the result is never worse on the
    fitting split than no bias, and classes that need no correction keep 0 relative to the rest.

    About N·C work per sweep (``ArgmaxState``), not N·C²: C = 1,000 and N = 50,000 fit in seconds on one CPU
    core (bench/results/scale_classes_cpu.md). The result is the plain search's (an ``(N, C)`` copy per class and
    candidate set), bit for bit: tests/test_posthoc_scale.py keeps that search as the reference.
    """
    state = ArgmaxState(logits, labels)
    best = float(_objective(per_class_recall(torch.from_numpy(state.i1 == state.labels), labels.long(),
                                             state.num)[:, None], spread_weight))
    radius = float(logits.double().std()) or 1.0
    for _ in range(sweeps):
        grid = torch.linspace(-radius, radius, GRID, dtype=torch.float64).numpy()  # (K,)
        near = state.near(2 * radius)  # per class, the samples it can gain or lose this sweep (moves <= radius)
        for c in range(state.num):
            values = state.bias[c] + grid  # (K,) as the plain search forms them, so the floats agree
            k, score = _best_move(state, c, near[c], values - state.bias[c], best, spread_weight)
            if k is not None:
                best = score
                state.move(c, values[k], near[c])
        radius /= 2
    bias = torch.from_numpy(state.bias)
    return (bias - bias.mean()).float()


def _objective(recall: torch.Tensor, spread_weight: float) -> torch.Tensor:
    """``mean - spread_weight * std`` over classes of recall ``(C, K)``, per candidate ``(K,)``."""
    return recall.mean(dim=0) - spread_weight * recall.std(dim=0, unbiased=False)


def _best_move(state: ArgmaxState, c: int, rows: np.ndarray, shifts: np.ndarray, best: float,
               spread_weight: float) -> tuple[int | None, float]:
    """The candidate index and score to move class c's bias to, or ``(None, best)`` when none gains.

    A candidate that changes no hit has the current recall, so it scores ``best``; when some do, a cheap
    upper bound on their scores (``_score_bound``) rules most steps out, and only the rest score all K
    candidates with ``_objective`` on the full ``(C, K)`` recall in torch, as the plain search does (its float
    rounding, hence its choice among tied candidates, depends on that matrix).
    """
    y, delta = state.hit_changes(c, rows, shifts)  # (R,), (R, K)
    if not delta.any() or _score_bound(state, y, delta, spread_weight) <= best + MIN_GAIN:
        return None, best
    scores = _objective(state.recall_with(y, delta), spread_weight)  # (K,)
    k = int(scores.argmax())
    return (k, float(scores[k])) if float(scores[k]) > best + MIN_GAIN else (None, best)


def _score_bound(state: ArgmaxState, y: np.ndarray, delta: np.ndarray, spread_weight: float) -> float:
    """An upper bound on the objective of every candidate that changes a hit, from the classes it changes.

    With ``r`` the current recall ``(C,)``, ``m0`` its mean and ``S = sum (r - m0)^2``, a candidate that changes
    the recall of classes U by ``d (|U|, K)`` has mean ``m0 + sum d / C`` and variance
    ``(S + sum(2 (r_U - m0) d + d^2)) / C - (sum d / C)^2``; ``SLACK`` covers the rounding of both.
    """
    u, inv = np.unique(y, return_inverse=True)
    k = delta.shape[1]
    flat = (inv[:, None] * k + np.arange(k)).ravel()                                # (R * K,) cell of (U, K)
    d = np.bincount(flat, weights=delta.ravel(), minlength=len(u) * k).reshape(len(u), k) / state.support[u, None]
    r, m0, s = state.recall_stats
    shift = d.sum(axis=0) / state.num                                              # (K,) change of the mean
    var = (s + (2 * (r[u] - m0)[:, None] * d + d * d).sum(axis=0)) / state.num - shift * shift
    bound = m0 + shift + SLACK - spread_weight * np.sqrt(np.maximum(var - SLACK, 0.0))
    return float(bound[delta.any(axis=0)].max())


class ArgmaxState:
    """``argmax(logits + bias)`` of every sample, kept up to date while one class's bias moves at a time.

    Holds the top two of ``z + b`` per sample (values ``v1 >= v2``, class indices ``i1``, ``i2``; ties go to the
    lowest index, as ``torch.argmax``). For class c, the best *other* class of a sample is ``(v1, i1)`` unless
    ``i1 == c``, else ``(v2, i2)``: no ``(N, C)`` copy per class. Every value is the float64 ``z_ij + b_j`` that
    ``argmax(logits.double() + bias)`` compares, so ties fall exactly as there. NumPy arrays: the fit makes
    thousands of small steps, and NumPy's per-call cost is a fraction of torch's.
    """

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        exact = logits.detach().cpu()
        exact = exact if exact.dtype in (torch.float16, torch.float32, torch.float64) else exact.float()  # bf16
        self.z = exact.numpy()                          # (N, C); read as float64
        self.zt = exact.t().contiguous().numpy()        # (C, N): one class's column is contiguous (torch's
        # blocked transpose is several times faster than NumPy's here)
        self.labels = labels.detach().cpu().long().numpy()  # (N,)
        n, self.num = self.z.shape
        self.bias = np.zeros(self.num)                  # (C,) float64
        self.support = np.bincount(self.labels, minlength=self.num).astype(np.float64)  # (C,)
        self.zmax = max(abs(float(self.z.max())), abs(float(self.z.min()))) if self.z.size else 0.0
        self.v1, self.v2 = np.empty(n), np.empty(n)                                  # (N,) float64
        self.i1, self.i2 = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)  # (N,)
        step = max(1, BLOCK // max(self.num, 1))
        for start in range(0, n, step):
            self._top2(np.arange(start, min(n, start + step)))
        self.hits = np.bincount(self.labels, weights=self.i1 == self.labels, minlength=self.num)  # (C,) correct
        self._update_stats()

    def near(self, window: float) -> list[np.ndarray]:
        """Per class c, the samples ``(R_c,)`` where ``z_c + b_c`` is within ``window`` of the second best value:
        a superset of those whose top two a move of any bias by at most ``window / 2`` can give c a place in
        or take it from (the best other class is at least the second best). One float32 pass over ``(C, N)``;
        the slack covers float32 rounding, so no sample is missed."""
        slop = 1e-6 * (1.0 + self.zmax + float(np.abs(self.bias).max()) + window)
        low = (self.v2 - (window + slop)).astype(np.float32)                      # (N,)
        bias = self.bias.astype(np.float32)
        return [np.flatnonzero(self.zt[c] >= low - bias[c]) for c in range(self.num)]

    def hit_changes(self, c: int, rows: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(R,)`` and hit changes ``(R, K)`` (-1, 0, +1) of the samples among ``rows`` whose prediction
        can change when ``b_c`` is shifted by each of ``shifts`` ``(K,)`` float64 (ascending); every other sample
        keeps its hit. Prediction c needs ``z_c + b_c + shift`` above the best other class's value, or equal to
        it with c the lower index: ``>=`` a value is ``>`` the float just below it, one comparison per candidate.
        """
        first = self.i1[rows]
        own = first == c
        top = np.where(own, self.v2[rows], self.v1[rows])              # best other class's value
        zc = self.zt[c, rows].astype(np.float64) + self.bias[c]
        keep = np.flatnonzero(((zc + shifts[-1]) >= top) | own)        # can be won by c, or is c's now
        rows, first, own, top, zc = rows[keep], first[keep], own[keep], top[keep], zc[keep]
        arg = np.where(own, self.i2[rows], first)                      # (R,) best other class, lowest index
        bar = np.where(c < arg, np.nextafter(top, -np.inf), top)
        is_c = (zc[:, None] + shifts[None, :]) > bar[:, None]          # (R, K) prediction becomes c
        y = self.labels[rows]
        hit = np.where(is_c, (y == c)[:, None], (arg == y)[:, None])   # (R, K)
        return y, hit - (first == y)[:, None].astype(np.float64)

    def recall_with(self, y: np.ndarray, delta: np.ndarray) -> torch.Tensor:
        """Per-class recall ``(C, K)`` torch float64 of K candidates, from hit changes ``delta (R, K)`` of samples
        of class ``y`` (exact integer counts, divided as ``per_class_recall`` divides)."""
        k = delta.shape[1]
        # one bincount over (class, candidate) cells: integer counts, so exact in any order; ~10x faster than
        # torch's index_add_ on CPU for (R, K) rows (bench/results/scale_classes_cpu.md)
        cell = (y[:, None] * k + np.arange(k)[None, :]).ravel()                         # (R * K,)
        counts = np.bincount(cell, weights=delta.ravel(), minlength=self.num * k).reshape(self.num, k)
        hits = torch.from_numpy(self.hits)[:, None] + torch.from_numpy(counts)               # (C, K)
        return hits / torch.from_numpy(self.support)[:, None]

    def candidate_recall(self, c: int, shifts: torch.Tensor) -> torch.Tensor:
        """Per-class recall ``(C, K)`` of ``argmax`` when ``b_c`` is shifted by each of ``shifts`` ``(K,)``."""
        return self.recall_with(*self.hit_changes(c, np.arange(len(self.labels)), shifts.double().numpy()))

    def move(self, c: int, value: float, rows: np.ndarray | None = None) -> None:
        """Set ``b_c = value``. The top two change only in ``rows`` (default: all samples; the fitter passes
        ``near``'s set for c): updated in place where c keeps or takes a place, recomputed from the full row
        where c was one of the two and fell behind (the third best is not kept)."""
        self.bias[c] = value
        rows = np.arange(len(self.labels)) if rows is None else rows
        zc = self.zt[c, rows].astype(np.float64) + self.bias[c]                     # (R,)
        v1, i1, v2, i2 = self.v1[rows], self.i1[rows], self.v2[rows], self.i2[rows]  # (R,) copies
        first, second = i1 == c, i2 == c
        beats_v1 = (zc > v1) | ((zc == v1) & (c < i1))
        beats_v2 = (zc > v2) | ((zc == v2) & (c < i2))
        new_top = ~first & beats_v1                                                 # c takes first place
        dropped = second & ~beats_v1 & (zc < v2)                                    # below its old second value
        as_second = ~first & ~beats_v1 & beats_v2 & ~dropped                        # c (still or newly) second
        y = self.labels[rows]
        hit_before = i1 == y
        self.v1[rows] = np.where(new_top | (first & beats_v2), zc, v1)
        self.i1[rows] = np.where(new_top, c, i1)
        self.v2[rows] = np.where(new_top, v1, np.where(as_second, zc, v2))         # the old first moves down
        self.i2[rows] = np.where(new_top, i1, np.where(as_second, c, i2))
        self._top2(rows[(first & ~beats_v2) | dropped])                             # third unknown: recompute
        self.hits += np.bincount(y, weights=(self.i1[rows] == y).astype(np.float64) - hit_before,
                                 minlength=self.num)  # integer counts: exact in any order
        self._update_stats()

    def _top2(self, rows: np.ndarray) -> None:
        """Recompute the top two of ``z + b`` for ``rows`` ``(R,)`` from the full rows."""
        if not len(rows):
            return
        # with no bias yet, z's own dtype orders and ties exactly as float64 does (the cast is exact)
        x = self.z[rows] + self.bias if self.bias.any() else self.z[rows]  # (R, C) copy
        first = x.argmax(axis=1)                                            # first maximal index on ties
        at = np.arange(len(rows))
        self.v1[rows], self.i1[rows] = x[at, first], first
        x[at, first] = -np.inf
        second = x.argmax(axis=1)
        self.v2[rows], self.i2[rows] = x[at, second], second

    def _update_stats(self) -> None:
        r = self.hits / self.support
        m0 = r.mean()
        self.recall_stats = (r, float(m0), float(((r - m0) ** 2).sum()))


def logit_adjust_biases(train_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """``-tau * log(n_c / n)``, ``(C,)``: rare classes get their logits raised."""
    return -tau * log_prior(train_counts)
