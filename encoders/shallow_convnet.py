"""A compact shallow convolutional network for raw EEG/sEEG epochs (a decoding baseline).

After the shallow ConvNet of Schirrmeister et al. (2017), the filter-bank-CSP-like
network that braindecode ships as ``ShallowFBCSPNet``: a temporal convolution, a
spatial convolution across all channels, batch normalisation, squaring, mean pooling,
a logarithm (so the features are log band powers of learned spatio-temporal filters),
dropout and a final convolution that gives the class scores.

Why our own and not braindecode's: braindecode 1.8 imports torchaudio at import time,
and torchaudio has no build for the CPU torch that brainhead pins, so
``import braindecode`` fails in brainhead's environment. This module is a plain
``nn.Module`` of the same design (its own code) with braindecode's constructor
signature (``n_chans``, ``n_outputs``, ``n_times``, ``sfreq``, ``chs_info``) and last
block name (``final_layer``), so it can be swapped for ``ShallowFBCSPNet`` where
braindecode imports.

References
----------
Schirrmeister, R. T. et al. (2017). Deep learning with convolutional neural networks
for EEG decoding and visualization. Human Brain Mapping 38(11), 5391-5420.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

__all__ = ["ShallowConvNet"]


class ShallowConvNet(nn.Module):
    """Shallow ConvNet: temporal conv, spatial conv, square, mean-pool, log, classify.

    Parameters
    ----------
    n_chans : int | None
        Channels of the input; taken from ``chs_info`` when None.
    n_outputs : int
        Classes.
    n_times : int
        Samples per epoch.
    sfreq : float
        Sampling rate (Hz) of the epochs; the kernel and pooling sizes below are in
        seconds and become samples at this rate.
    chs_info : list of dict | None
        MNE-style channel descriptions (only their number is used).
    n_filters : int
        Temporal and spatial filters.
    filter_s, pool_s, stride_s : float
        Temporal kernel, pooling window and pooling stride (s).
    dropout : float

    Notes
    -----
    Input ``(batch, n_chans, n_times)``; output ``(batch, n_outputs)`` logits.
    """

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = None,
                 chs_info: list | None = None, *, n_filters: int = 40, filter_s: float = 0.25,
                 pool_s: float = 0.75, stride_s: float = 0.15, dropout: float = 0.5):
        super().__init__()
        if n_chans is None and chs_info is not None:
            n_chans = len(chs_info)
        if chs_info is not None and n_chans != len(chs_info):
            raise ValueError(f"n_chans={n_chans} but chs_info describes {len(chs_info)} channels")
        missing = [k for k, v in (("n_chans", n_chans), ("n_outputs", n_outputs),
                                  ("n_times", n_times), ("sfreq", sfreq)) if v is None]
        if missing:
            raise ValueError(f"ShallowConvNet needs {', '.join(missing)}")
        self.n_chans, self.n_outputs, self.n_times, self.sfreq = n_chans, n_outputs, n_times, sfreq
        k = max(2, min(int(round(filter_s * sfreq)), n_times))
        pool = max(1, min(int(round(pool_s * sfreq)), n_times - k + 1))
        stride = max(1, int(round(stride_s * sfreq)))
        self.temporal = nn.Conv2d(1, n_filters, (1, k))
        self.spatial = nn.Conv2d(n_filters, n_filters, (n_chans, 1), bias=False)
        self.norm = nn.BatchNorm2d(n_filters)
        self.pool = nn.AvgPool2d((1, pool), stride=(1, stride))
        self.drop = nn.Dropout(dropout)
        n_out = (n_times - k + 1 - pool) // stride + 1
        self.final_layer = nn.Conv2d(n_filters, n_outputs, (1, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_chans, n_times) -> (batch, n_outputs)."""
        h = rearrange(x, "b c t -> b 1 c t")
        h = self.norm(self.spatial(self.temporal(h)))          # (b, f, 1, t')
        h = torch.log(torch.clamp(self.pool(h * h), min=1e-6))  # log mean power
        h = self.final_layer(self.drop(h))                      # (b, n_outputs, 1, 1)
        return rearrange(h, "b o 1 1 -> b o")
