"""Subject adapters and one shared decoder: brain responses -> a model layer's features.

After "See Through Their Minds", MindBridge and UMBRAE: a shallow adapter per subject
maps that subject's targets (any number of voxels, contacts or channel-band pairs) into
a shared space, and one deep decoder, shared by every subject, maps the shared space to
the feature space of a transformer layer. A new subject needs only a new adapter
(:meth:`AdapterDecoder.add_subject`, then :meth:`AdapterDecoder.freeze_shared`):
"reset-tuning".

Shapes: ``B`` stimuli, ``T`` targets of a subject, ``P`` pooled targets, ``d`` shared
width, ``D`` output (feature) width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdapterDecoder", "SharedDecoder", "SubjectAdapter"]


class SubjectAdapter(nn.Module):
    """One subject's map from its targets to the shared space.

    Parameters
    ----------
    n_targets : int
        The subject's number of targets.
    d_shared : int
        Width of the shared space.
    kind : {"linear", "mlp"}
        A linear map, or linear -> GELU -> linear with ``d_shared`` hidden units.
    pool : int, optional
        First reduce the targets to ``pool`` values by adaptive max pooling over the
        targets in their given order (order them by position, as MindBridge does, so
        that neighbouring targets share a pool), then map ``pool -> d_shared``: the
        adapter's size no longer grows with the brain. None maps all targets.
    dropout : float
        Dropout on the adapter's input.
    """

    def __init__(self, n_targets: int, d_shared: int, *, kind: str = "linear",
                 pool: int | None = None, dropout: float = 0.0):
        super().__init__()
        if int(n_targets) < 1:
            raise ValueError(f"an adapter needs at least one target, got {n_targets}")
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
        if pool is not None and int(pool) < 1:
            raise ValueError(f"pool must be a positive size or None, got {pool}")
        self.n_targets, self.pool = int(n_targets), None if pool is None else int(pool)
        self.kind = kind
        n_in = self.n_targets if self.pool is None else self.pool
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.map = nn.Linear(n_in, d_shared)
        else:
            self.map = nn.Sequential(nn.Linear(n_in, d_shared), nn.GELU(),
                                     nn.Linear(d_shared, d_shared))

    def _check(self, y: torch.Tensor) -> None:
        if y.ndim != 2 or y.shape[1] != self.n_targets:
            raise ValueError(f"expected responses of shape (B, {self.n_targets}), got "
                             f"{tuple(y.shape)}")

    def _pooled(self, y: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            y = F.adaptive_max_pool1d(y[:, None, :], self.pool)[:, 0]
        return y

    def map_inputs(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T) responses -> (B, P) what the map reads (pooled when ``pool`` is set;
        no dropout): the design matrix of a closed-form fit of a linear adapter."""
        self._check(y)
        return self._pooled(y)

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set a linear adapter's map to ``map_inputs(y) @ weight.T + bias``.

        Parameters
        ----------
        weight : Tensor, shape (d, P)
        bias : Tensor, shape (d,)
        """
        if self.kind != "linear":
            raise ValueError("only a linear adapter can be set in closed form")
        if tuple(weight.shape) != tuple(self.map.weight.shape) or \
                tuple(bias.shape) != tuple(self.map.bias.shape):
            raise ValueError(f"expected weight {tuple(self.map.weight.shape)} and bias "
                             f"{tuple(self.map.bias.shape)}, got {tuple(weight.shape)} and "
                             f"{tuple(bias.shape)}")
        with torch.no_grad():
            self.map.weight.copy_(weight)
            self.map.bias.copy_(bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T) responses -> (B, d) shared representation."""
        self._check(y)
        return self.map(self._pooled(self.dropout(y)))


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(width, width))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class SharedDecoder(nn.Module):
    """Residual MLP from the shared space to the output features.

    Parameters
    ----------
    d_shared, d_out : int
        Input and output widths.
    depth : int
        Pre-norm residual blocks (``x + MLP(LayerNorm(x))``), 0 for a linear decoder.
    dropout : float
        Dropout inside the blocks.
    """

    def __init__(self, d_shared: int, d_out: int, *, depth: int = 2, dropout: float = 0.1):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.blocks = nn.Sequential(*[_ResidualBlock(d_shared, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(d_shared)
        self.head = nn.Linear(d_shared, d_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, D)."""
        return self.head(self.norm(self.blocks(z)))


class AdapterDecoder(nn.Module):
    """Per-subject adapters into one shared decoder.

    Parameters
    ----------
    n_targets : mapping of str to int
        Subject id -> number of targets.
    d_out : int
        Width of the decoded features (one model layer).
    d_shared : int
        Width of the shared space.
    depth : int
        Residual blocks of the shared decoder.
    adapter : {"linear", "mlp"}
        Kind of every subject's adapter.
    pool : int, optional
        Adaptive max pooling of the targets before each adapter (see
        :class:`SubjectAdapter`).
    dropout : float
        Dropout on the adapters' input and inside the decoder.
    """

    def __init__(self, n_targets: Mapping[str, int], d_out: int, *, d_shared: int = 256,
                 depth: int = 2, adapter: str = "linear", pool: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.d_shared, self.d_out = int(d_shared), int(d_out)
        self.adapter_kind, self.pool, self.dropout = adapter, pool, float(dropout)
        self.adapters = nn.ModuleDict()
        self.decoder = SharedDecoder(self.d_shared, self.d_out, depth=depth, dropout=dropout)
        for subject, n in n_targets.items():
            self.add_subject(subject, n)

    @property
    def subjects(self) -> list[str]:
        return list(self.adapters.keys())

    def n_targets(self, subject: str) -> int:
        return self.adapters[subject].n_targets

    def add_subject(self, subject: str, n_targets: int) -> None:
        """A fresh adapter for ``subject`` (drawn from torch's default generator)."""
        if subject in self.adapters:
            raise ValueError(f"subject {subject!r} already has an adapter")
        self.adapters[subject] = SubjectAdapter(n_targets, self.d_shared,
                                                kind=self.adapter_kind, pool=self.pool,
                                                dropout=self.dropout)

    def subject_parameters(self, subject: str) -> list[nn.Parameter]:
        """The parameters of ``subject``'s adapter."""
        return list(self.adapters[subject].parameters())

    def freeze_shared(self, trainable_subjects: Sequence[str] = ()) -> None:
        """Freeze everything but the adapters of ``trainable_subjects`` (reset-tuning)."""
        keep = {id(p) for s in trainable_subjects for p in self.subject_parameters(s)}
        for param in self.parameters():
            param.requires_grad_(id(param) in keep)

    def embed(self, y: torch.Tensor, subject: str) -> torch.Tensor:
        """(B, T) responses of ``subject`` -> (B, d) shared representation."""
        if subject not in self.adapters:
            raise KeyError(f"unknown subject {subject!r}; known: {self.subjects}")
        return self.adapters[subject](y)

    def forward(self, y: torch.Tensor, subject: str) -> torch.Tensor:
        """(B, T) responses of ``subject`` -> (B, D) decoded features."""
        return self.decoder(self.embed(y, subject))
