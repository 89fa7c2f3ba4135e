"""The memory tasks and curricula of the memory-RNN paper, and network timescales.

After Khajehabdollahi et al., "Emergent mechanisms for long timescales depend on training
curriculum and affect performance in memory tasks" (ICLR 2024):

- :func:`n_parity`: the parity (sum modulo 2) of the last ``N`` binary inputs; each
  sequence's inputs are Bernoulli with a bias drawn uniformly in [0, 1] per sequence.
- :func:`n_dms`: N-delayed match-to-sample: whether the input ``N`` steps back equals
  the current one; inputs are fair coin flips.
- :class:`Curriculum`: *single-head* (one head; ``N`` grows once it is learnt and
  smaller ``N`` are no longer trained) or *multi-head* (a head for ``N + 1`` is added
  and every earlier head keeps training). Advance rule: the mean accuracy over the
  trained heads and the accuracy of the newest head both at or above ``threshold``.
- :func:`network_timescales`: each unit's timescale from the autocorrelation of its
  activity (the lag at which it falls to 1/e), beside the unit's own ``tau``.

Everything here is numpy: generators take a :class:`numpy.random.Generator`, so a batch is
a function of its seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CURRICULA", "TASKS", "Curriculum", "memory_curve", "n_dms", "n_parity",
           "network_timescales", "one_hot", "task_batch"]

#: Curriculum kinds.
CURRICULA = ("single", "multi")


def _check_depth(n: int, length: int, task: str) -> None:
    if int(n) < 1:
        raise ValueError(f"{task}: N must be >= 1, got {n}")
    if int(length) < int(n) + (1 if task == "dms" else 0):
        raise ValueError(f"{task}: a sequence of {length} steps cannot hold N={n}")


def n_parity(x: np.ndarray, n: int) -> np.ndarray:
    """Parity of the last ``n`` inputs of each sequence, (B,), from ``x`` (B, T) in {0, 1}."""
    _check_depth(n, x.shape[1], "parity")
    return (x[:, -int(n):].sum(1) % 2).astype(np.int64)


def n_dms(x: np.ndarray, n: int) -> np.ndarray:
    """1 where the input ``n`` steps back equals the last one, (B,), from ``x`` (B, T)."""
    _check_depth(n, x.shape[1], "dms")
    return (x[:, -1] == x[:, -1 - int(n)]).astype(np.int64)


#: Task name -> label function ``(x, N) -> labels``.
TASKS = {"parity": n_parity, "dms": n_dms}


def task_inputs(task: str, batch_size: int, length: int, rng: np.random.Generator
                ) -> np.ndarray:
    """Binary input sequences (B, T) of ``task``: per-sequence Bernoulli bias for parity,
    fair coins for DMS."""
    if task == "parity":
        bias = rng.uniform(0.0, 1.0, (batch_size, 1))
        return (rng.random((batch_size, length)) < bias).astype(np.int64)
    if task == "dms":
        return rng.integers(0, 2, (batch_size, length))
    raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")


def task_batch(task: str, depths: Sequence[int], batch_size: int, rng: np.random.Generator,
               *, max_extra: int = 10) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One batch of ``task`` sequences, labelled at their last step for every depth.

    The length is drawn once per batch, uniformly in ``[N_max + 1, N_max + 1 +
    max_extra]`` (``N_max = max(depths)``), so every depth fits (DMS needs ``N + 1``
    steps) and the network cannot count on a fixed position of the last step.

    Returns
    -------
    x : ndarray of int, shape (B, T)
    labels : dict of int to ndarray of int, shape (B,)
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    depths = sorted({int(n) for n in depths})
    if not depths:
        raise ValueError("task_batch needs at least one depth")
    length = int(rng.integers(depths[-1] + 1, depths[-1] + 2 + int(max_extra)))
    x = task_inputs(task, batch_size, length, rng)
    return x, {n: TASKS[task](x, n) for n in depths}


def one_hot(x: np.ndarray) -> np.ndarray:
    """Binary sequences (B, T) as float32 one-hot inputs (B, T, 2)."""
    return np.eye(2, dtype=np.float32)[x]


@dataclass
class Curriculum:
    """Which heads train at which depth, and when the depth grows.

    Parameters
    ----------
    kind : {"single", "multi"}
    n_start : int
        First depth ``N``.
    threshold : float
        Accuracy (in [0, 1]) that the mean over the trained heads and the newest head
        must both reach (``>=``) for ``N`` to grow.
    n_max : int, optional
        Depth at which the curriculum ends.

    Attributes
    ----------
    n : int
        The current (largest trained) depth.
    """

    kind: str
    n_start: int = 2
    threshold: float = 0.98
    n_max: int | None = None
    n: int = field(init=False)

    def __post_init__(self):
        if self.kind not in CURRICULA:
            raise ValueError(f"curriculum must be one of {CURRICULA}, got {self.kind!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if int(self.n_start) < 1:
            raise ValueError(f"n_start must be >= 1, got {self.n_start}")
        self.n = int(self.n_start)

    @staticmethod
    def head_name(n: int | None = None) -> str:
        """Name of the head of depth ``n`` (multi-head), or of the one head (None)."""
        return "n" if n is None else f"n{int(n)}"

    @property
    def heads(self) -> dict[str, int]:
        """Heads trained now: name -> depth (newest last)."""
        if self.kind == "single":
            return {self.head_name(): self.n}
        return {self.head_name(k): k for k in range(self.n_start, self.n + 1)}

    @property
    def newest(self) -> str:
        return list(self.heads)[-1]

    @property
    def finished(self) -> bool:
        return self.n_max is not None and self.n >= self.n_max

    def ready(self, accuracy: Mapping[str, float]) -> bool:
        """Whether the advance rule holds for these per-head accuracies."""
        heads = self.heads
        missing = sorted(set(heads) - set(accuracy))
        if missing:
            raise KeyError(f"no accuracy for trained heads {missing}")
        mean = float(np.mean([accuracy[h] for h in heads]))
        return mean >= self.threshold and float(accuracy[self.newest]) >= self.threshold

    def advance(self, accuracy: Mapping[str, float]) -> bool:
        """Grow ``N`` by one if :meth:`ready` (and ``N < n_max``); return whether it grew."""
        if self.finished or not self.ready(accuracy):
            return False
        self.n += 1
        return True


def network_timescales(activity: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Each unit's timescale from the autocorrelation of its activity.

    The autocorrelation of unit ``i`` at lag ``k`` is computed over every sequence
    (activity centred by the unit's mean over all sequences and steps, normalised by the
    lag-0 value); the timescale is the lag at which it first falls to ``1/e``,
    interpolated linearly between lags. For an exponential autocorrelation
    ``exp(-k / tau)`` this is ``tau``.

    Parameters
    ----------
    activity : ndarray, shape (B, T, H)
        Hidden states over ``B`` sequences of ``T`` steps (drop any transient first).
    max_lag : int, optional
        Largest lag considered (default ``T // 2``). A unit whose autocorrelation stays
        above ``1/e`` up to it gets ``max_lag`` (a lower bound).

    Returns
    -------
    timescales : ndarray, shape (H,)
        In steps; NaN for a unit whose activity is constant.
    """
    a = np.asarray(activity, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"activity must be (sequences, steps, units), got {a.shape}")
    _, t, h = a.shape
    max_lag = t // 2 if max_lag is None else min(int(max_lag), t - 1)
    a = a - a.mean(axis=(0, 1), keepdims=True)
    ac = np.stack([np.einsum("bth,bth->h", a[:, : t - k], a[:, k:]) / (t - k)
                   for k in range(max_lag + 1)])  # (lags, H)
    out = np.full(h, np.nan)
    ok = ac[0] > 1e-12 * max(1.0, float(np.abs(ac).max()))
    ac = ac[:, ok] / ac[0, ok]
    below = ac <= np.exp(-1.0)
    first = np.where(below.any(0), below.argmax(0), -1)
    res = np.full(ac.shape[1], float(max_lag))
    hit = first > 0
    k = first[hit]
    cols = np.flatnonzero(hit)
    hi, lo = ac[k - 1, cols], ac[k, cols]
    res[hit] = (k - 1) + (hi - np.exp(-1.0)) / np.maximum(hi - lo, 1e-12)
    out[ok] = res
    return out


def memory_curve(activity: np.ndarray, inputs: np.ndarray, max_lag: int, *,
                 ridge: float = 1e-3) -> np.ndarray:
    """How well the population's state at ``t`` holds the input of ``t - k``.

    A linear read-out (ridge regression with an intercept) of ``2 x_{t-k} - 1`` from
    ``h_t`` is fitted on the first half of the sequences and tested on the other half;
    the score of lag ``k`` is the held-out accuracy of its sign (0.5 is chance). Unlike
    single units' autocorrelation (:func:`network_timescales`), this sees memory held
    across units, e.g. delayed copies of the input passed from unit to unit.

    Parameters
    ----------
    activity : ndarray, shape (B, T, H)
    inputs : ndarray of {0, 1}, shape (B, T)
    max_lag : int

    Returns
    -------
    accuracy : ndarray, shape (max_lag + 1,)
    """
    a = np.asarray(activity, dtype=np.float64)
    x = 2.0 * np.asarray(inputs, dtype=np.float64) - 1.0
    b, t, h = a.shape
    if not 0 <= max_lag < t - 1 or b < 2:
        raise ValueError(f"need 2+ sequences longer than max_lag + 1={max_lag + 1}, got {a.shape}")
    steps = np.arange(max_lag, t)
    targets = np.stack([x[:, steps - k] for k in range(max_lag + 1)], -1)  # (B, S, K)
    feats = np.concatenate([a[:, steps], np.ones((b, len(steps), 1))], -1)
    half = b // 2
    Xf, Yf = feats[:half].reshape(-1, h + 1), targets[:half].reshape(-1, max_lag + 1)
    Xt, Yt = feats[half:].reshape(-1, h + 1), targets[half:].reshape(-1, max_lag + 1)
    gram = Xf.T @ Xf + ridge * len(Xf) * np.eye(h + 1)
    W = np.linalg.solve(gram, Xf.T @ Yf)
    return (np.sign(Xt @ W) == Yt).mean(0)
