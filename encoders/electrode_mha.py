"""Inter-cortical electrode multi-head attention: one token per electrode, attention across them.

After RBTransformer ("A Brain Wave Encodes a Thousand Tokens", Mehta et al.): each
electrode is one token built from its band features (band differential entropy or log
band power: the ``bands`` view, channels x bands), a linear embedding of those features
plus an embedding of the electrode's identity. Pre-norm transformer blocks (multi-head
self-attention across electrodes, then a feed-forward layer) mix the tokens; the tokens
of the electrodes that exist are averaged and a linear head classifies the trial. The
attention weights of each block form an electrode x electrode matrix per trial.

Electrode identity comes from one of two sources:

``"name"``
    A learned embedding per channel name (an index into a vocabulary). Scalp EEG
    subjects share a montage, so subjects share the embeddings and a model trained on
    some subjects reads another's channels. Index 0 is reserved for padding and names
    that the vocabulary lacks; its embedding stays zero.
``"coords"``
    A learned map of the contact's coordinates (MNI, metres): random Fourier features
    (fixed frequencies) followed by a two-layer MLP. Intracranial implants differ from
    subject to subject; a new subject's contacts get embeddings from where they are,
    without retraining.

Subjects with different electrode counts train together: the inputs are padded to a
common count and a boolean mask says which electrodes exist; padded electrodes are
never attended to, never pooled, and their input values do not reach the output.

The constructor follows braindecode's model signature (``n_chans``, ``n_outputs``,
``n_times``, ``sfreq``, ``chs_info``); with ``chs_info`` the model builds its own
vocabulary (or coordinates) for that montage and ``forward`` takes a plain
``(batch, n_chans, n_bands)`` tensor. The model reads band features, not samples:
``n_times``, ``input_window_seconds`` and ``sfreq`` are accepted for compatibility and
stored, but unused.

Shapes: ``B`` trials, ``C`` electrodes (padded), ``F`` bands, ``d`` model width,
``H`` heads, ``d_h`` head width.

This module imports torch and einops only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["ElectrodeAttention", "ElectrodeMHA", "FourierCoordinates"]


class FourierCoordinates(nn.Module):
    """Learned map of 3-D coordinates: random Fourier features, then a 2-layer MLP.

    ``gamma(p) = [sin(2 pi B p), cos(2 pi B p), p / length]`` with ``B`` (n_freqs, 3)
    drawn once from N(0, 1 / length^2) (a fixed buffer, saved with the weights), then
    ``Linear -> GELU -> Linear`` to ``d_model`` (Tancik et al. 2020, "Fourier features
    let networks learn high frequency functions in low dimensional domains").

    Parameters
    ----------
    d_model : int
    n_freqs : int
        Number of random frequencies.
    length : float
        Length scale in the coordinates' unit (metres for MNI): the typical distance
        over which the embedding can change. Sub-centimetre scales let neighbouring
        contacts differ; a scale near the head's size makes the map smooth.
    """

    def __init__(self, d_model: int, *, n_freqs: int = 32, length: float = 0.03):
        super().__init__()
        if length <= 0:
            raise ValueError(f"length must be > 0, got {length}")
        gen = torch.Generator().manual_seed(0)  # fixed frequencies, whatever the seed
        self.length = float(length)
        self.register_buffer("freqs", torch.randn(n_freqs, 3, generator=gen) / length)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs + 3, d_model), nn.GELU(),
                                 nn.Linear(d_model, d_model))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (..., 3) -> (..., d_model)."""
        phase = 2 * math.pi * coords @ self.freqs.T
        return self.mlp(torch.cat([phase.sin(), phase.cos(), coords / self.length], -1))


class ElectrodeAttention(nn.Module):
    """Multi-head self-attention across electrodes, with a key padding mask.

    ``H`` heads of width ``d_h`` (``H * d_h`` need not equal ``d_model``: an output
    projection maps the concatenated heads back to ``d_model``).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, dropout: float):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        inner = n_heads * d_head
        self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.out = nn.Linear(inner, d_model)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, d), mask (B, C) bool -> (B, C, d), attention (B, H, C, C) or None.

        Without ``need_weights`` the fused kernel
        (:func:`torch.nn.functional.scaled_dot_product_attention`) computes the same
        function without materialising the weights.
        """
        q, k, v = rearrange(self.qkv(x), "b c (three h e) -> three b h c e", three=3,
                            h=self.n_heads)
        keys = mask[:, None, None, :]
        if not need_weights:
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
            return self.out(rearrange(out, "b h c e -> b c (h e)")), None
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        attn = scores.masked_fill(~keys, float("-inf")).softmax(-1)
        out = rearrange(self.attn_drop(attn) @ v, "b h c e -> b c (h e)")
        return self.out(out), attn


class _Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + FF(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = ElectrodeAttention(d_model, n_heads, d_head, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, need_weights=False):
        h, attn = self.attn(self.norm1(x), mask, need_weights)
        x = x + self.drop(h)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, attn


class ElectrodeMHA(nn.Module):
    """Electrode-token transformer classifier (RBTransformer-style).

    Parameters
    ----------
    n_chans : int, optional
        Number of electrodes of a fixed montage (inferred from ``chs_info``). Without a
        montage, the electrode count may change from batch to batch.
    n_outputs : int
        Number of classes.
    n_times : int, optional
        Unused (the model reads band features); accepted for braindecode compatibility.
    n_bands : int
        Band features per electrode (the last input axis).
    identity : {"name", "coords", "auto"}
        Where the electrode identity embedding comes from (see the module doc).
        ``"auto"``: ``"coords"`` when ``chs_info`` gives every channel a finite
        location (``loc[:3]``), else ``"name"``.
    n_names : int, optional
        Vocabulary size for ``identity="name"`` without ``chs_info``, counting the
        padding/unknown index 0 (so channels are numbered 1 .. n_names - 1).
    d_model : int
        Token width (paper: 128).
    n_blocks : int
        Transformer blocks (paper: 4).
    n_heads : int
        Attention heads (paper: 6).
    d_head : int, optional
        Width of one head. Default ``max(1, d_model // n_heads)``: 128 is not divisible
        by 6, so the paper's setting runs 6 heads of 21 (126 wide), and the output
        projection of each attention layer maps them back to 128.
    ff_mult : int
        Feed-forward hidden width as a multiple of ``d_model``.
    dropout : float
        Dropout on attention weights, block outputs and the feed-forward hidden layer.
    n_freqs, coord_length : int, float
        Settings of :class:`FourierCoordinates` (``identity="coords"``).
    chs_info : list of dict, optional
        MNE-style channel descriptions (``info["chs"]``): ``"ch_name"`` and optionally
        ``"loc"`` (12 floats, the first three the position in metres). Fixes the
        montage: ``forward(x)`` then needs no ``ids``, ``coords`` or ``mask``.
    input_window_seconds, sfreq : float, optional
        Unused; accepted for braindecode compatibility.

    Attributes
    ----------
    final_layer : nn.Linear
        The classification head (braindecode's name for the last layer).

    Notes
    -----
    Padded electrodes are masked as attention keys and left out of the mean pooling;
    their input features (and coordinates) are set to zero first, so that NaN or any
    other values there cannot reach the output. A trial needs at least one electrode.

    References
    ----------
    .. [1] Mehta et al., "A Brain Wave Encodes a Thousand Tokens: Modeling Inter-Cortical
       Neural Interactions for Effective EEG-based Emotion Recognition" (RBTransformer).
    .. [2] Tancik et al. (2020), "Fourier features let networks learn high frequency
       functions in low dimensional domains", NeurIPS.
    """

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, *, n_bands: int = 5, identity: str = "auto",
                 n_names: int | None = None, d_model: int = 128, n_blocks: int = 4,
                 n_heads: int = 6, d_head: int | None = None, ff_mult: int = 4,
                 dropout: float = 0.1, n_freqs: int = 32, coord_length: float = 0.03,
                 chs_info: Sequence[dict] | None = None,
                 input_window_seconds: float | None = None, sfreq: float | None = None):
        super().__init__()
        if n_outputs is None or int(n_outputs) < 1:
            raise ValueError(f"n_outputs must be a positive int, got {n_outputs!r}")
        if identity not in ("name", "coords", "auto"):
            raise ValueError(f"identity must be 'name', 'coords' or 'auto', got {identity!r}")
        if d_model < 1 or n_blocks < 1 or n_heads < 1 or n_bands < 1:
            raise ValueError("d_model, n_blocks, n_heads and n_bands must be >= 1, got "
                             f"{d_model}, {n_blocks}, {n_heads}, {n_bands}")
        locs = None
        if chs_info is not None:
            chs_info = list(chs_info)
            names = [str(ch["ch_name"]) for ch in chs_info]
            if len(set(names)) != len(names):
                raise ValueError("chs_info: channel names must be unique")
            if n_chans is not None and int(n_chans) != len(chs_info):
                raise ValueError(f"n_chans={n_chans} but chs_info describes "
                                 f"{len(chs_info)} channels")
            n_chans = len(chs_info)
            loc = [ch.get("loc") for ch in chs_info]
            if all(v is not None and len(v) >= 3 for v in loc):
                locs = torch.tensor([[float(c) for c in v[:3]] for v in loc])
                if not torch.isfinite(locs).all() or not locs.abs().sum(1).gt(0).all():
                    locs = None  # MNE writes NaN or zeros for channels without a position
            self.ch_names = names
        else:
            self.ch_names = None
        if identity == "auto":
            identity = "coords" if locs is not None else "name"
        if identity == "coords" and chs_info is not None and locs is None:
            raise ValueError("identity='coords' needs a finite 'loc' for every channel "
                             "of chs_info")
        if identity == "name":
            if chs_info is not None:
                n_names = len(chs_info) + 1
            if n_names is None or n_names < 2:
                raise ValueError("identity='name' needs chs_info or n_names >= 2 "
                                 f"(the vocabulary size with index 0), got {n_names!r}")
        self.n_chans, self.n_outputs, self.n_times = n_chans, int(n_outputs), n_times
        self.n_bands, self.identity = int(n_bands), identity
        self.sfreq, self.input_window_seconds = sfreq, input_window_seconds
        self.chs_info = chs_info
        self.d_model, self.n_heads = int(d_model), int(n_heads)
        self.d_head = int(d_head) if d_head is not None else max(1, d_model // n_heads)

        self.embed = nn.Linear(self.n_bands, d_model)
        if identity == "name":
            self.n_names = int(n_names)
            self.name_embedding = nn.Embedding(self.n_names, d_model, padding_idx=0)
            nn.init.normal_(self.name_embedding.weight, std=0.02)
            with torch.no_grad():
                self.name_embedding.weight[0].zero_()
        else:
            self.n_names = None
            self.coord_embedding = FourierCoordinates(d_model, n_freqs=n_freqs,
                                                      length=coord_length)
        self.blocks = nn.ModuleList([_Block(d_model, self.n_heads, self.d_head, ff_mult,
                                            dropout) for _ in range(n_blocks)])
        self.norm = nn.LayerNorm(d_model)
        self.final_layer = nn.Linear(d_model, self.n_outputs)
        if chs_info is not None:
            self.register_buffer("montage_ids", torch.arange(1, n_chans + 1),
                                 persistent=False)
            self.register_buffer("montage_coords",
                                 locs if locs is not None else torch.zeros(n_chans, 3),
                                 persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                ids: torch.Tensor | None = None, coords: torch.Tensor | None = None,
                return_attention: bool = False):
        """Class logits of each trial.

        Parameters
        ----------
        x : Tensor, shape (B, C, F)
            Band features per electrode.
        mask : BoolTensor, shape (B, C), optional
            True where an electrode exists (default: all).
        ids : LongTensor, shape (B, C), optional
            Vocabulary index of each electrode's name (``identity="name"``; 0 for
            padding or unknown). Default: the ``chs_info`` montage.
        coords : Tensor, shape (B, C, 3), optional
            Electrode coordinates (``identity="coords"``). Default: the montage's.
        return_attention : bool
            Also return each block's attention weights.

        Returns
        -------
        logits : Tensor, shape (B, n_outputs)
        attention : list of Tensor, shape (B, H, C, C)
            Only with ``return_attention``: one per block, rows (queries) sum to one
            over the existing electrodes (keys).
        """
        if x.ndim != 3 or x.shape[-1] != self.n_bands:
            raise ValueError(f"x must be (batch, electrodes, {self.n_bands} bands), "
                             f"got shape {tuple(x.shape)}")
        b, c, _ = x.shape
        if mask is None:
            mask = torch.ones(b, c, dtype=torch.bool, device=x.device)
        mask = mask.bool()
        x = x.masked_fill(~mask[..., None], 0.0)
        h = self.embed(x)
        if self.identity == "name":
            if ids is None:
                ids = self._montage("montage_ids", c).expand(b, c)
            h = h + self.name_embedding(ids.masked_fill(~mask, 0))
        else:
            if coords is None:
                coords = self._montage("montage_coords", c).expand(b, c, 3)
            coords = coords.to(h.dtype).masked_fill(~mask[..., None], 0.0)
            h = h + self.coord_embedding(torch.nan_to_num(coords))
        attention = []
        for block in self.blocks:
            h, attn = block(h, mask, return_attention)
            attention.append(attn)
        w = mask.to(h.dtype)[..., None]
        pooled = (self.norm(h) * w).sum(1) / w.sum(1).clamp_min(1.0)
        logits = self.final_layer(pooled)
        return (logits, attention) if return_attention else logits

    def _montage(self, name: str, c: int) -> torch.Tensor:
        if self.chs_info is None:
            what = "ids" if name == "montage_ids" else "coords"
            raise ValueError(f"forward needs `{what}` when the model has no chs_info")
        if c != self.n_chans:
            raise ValueError(f"the montage has {self.n_chans} channels, x has {c}")
        return getattr(self, name)
