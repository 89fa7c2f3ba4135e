"""Planted memory: trial responses that also carry the previous stimuli of their run.

With the study's ``simulate.memory`` set (``depth`` k >= 1 and ``decay`` in (0, 1]), the
response to trial ``j`` of a run is no longer the read-out of stimulus ``j`` alone but

.. math::

    r_j = \\sum_{m=0}^{k} \\mathrm{decay}^m \\, \\rho(s_{j-m})

where ``rho(s)`` is the planted read-out of stimulus ``s`` (terms with ``j - m < 0``
left out): the signal keeps a memory of the last ``k`` stimuli, fading with the lag. A
memory decoder (:mod:`brainhead.train.memory`) should find the features of stimuli up to
``k`` back, and none further. ``depth`` 0 (the default) changes nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MEMORY_DEFAULTS", "memory_weights", "planted_memory"]

#: Defaults of the study's ``simulate.memory`` section.
MEMORY_DEFAULTS = {"depth": 0, "decay": 0.6}


def memory_weights(depth: int, decay: float) -> np.ndarray:
    """Weight of the stimulus ``m`` trials back, ``m = 0..depth``: ``decay ** m``."""
    depth, decay = int(depth), float(decay)
    if depth < 0:
        raise ValueError(f"simulate.memory.depth must be >= 0, got {depth}")
    if not 0 < decay <= 1:
        raise ValueError(f"simulate.memory.decay must be in (0, 1], got {decay}")
    return decay ** np.arange(depth + 1)


def planted_memory(responses: np.ndarray, order: np.ndarray, memory: dict | None
                   ) -> np.ndarray:
    """Per-trial responses of one run with the planted memory.

    Parameters
    ----------
    responses : ndarray, shape (n_stimuli, n_targets)
        Planted read-out of every stimulus.
    order : ndarray of int, shape (n_trials,)
        Stimulus of each trial of the run, in presentation order.
    memory : dict or None
        ``depth`` and ``decay`` (:data:`MEMORY_DEFAULTS`); None or depth 0: no memory.

    Returns
    -------
    trials : ndarray, shape (n_trials, n_targets)
    """
    order = np.asarray(order, dtype=int)
    out = np.asarray(responses, dtype=np.float64)[order]
    settings = {**MEMORY_DEFAULTS, **(memory or {})}
    weights = memory_weights(settings["depth"], settings["decay"])
    trials = out.copy()
    for m, w in enumerate(weights[1:], start=1):
        trials[m:] += w * out[:-m]
    return trials
