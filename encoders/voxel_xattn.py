"""Voxel-centric cross-attention encoder: model features -> every target of every subject.

After "The Wisdom of a Crowd of Brains: A Universal Brain Encoder" (Beliy et al.): each
target (voxel, contact, channel) of each subject owns a learned embedding, which is the
query of a multi-head cross-attention over the stimulus' layer tokens (each layer's
pooled features projected to a common width, plus a learned layer embedding). A
per-target read-out turns the attended vector into the predicted response.

Everything but the per-target embeddings and read-outs is shared by all subjects, so
subjects with different numbers of targets train together, a new subject can be added
with :meth:`VoxelCrossAttention.add_subject` and trained alone with
:meth:`VoxelCrossAttention.freeze_shared`, and the attention weights over layers are a
model-derived layer-alignment map for every target.

Shapes: ``B`` stimuli, ``L`` layers, ``D`` feature width, ``S`` targets asked for,
``H`` heads, ``d`` model width (``d = H * d_head``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from einops import rearrange
import torch.nn.functional as F
from torch import nn

__all__ = ["VoxelCrossAttention"]


class VoxelCrossAttention(nn.Module):
    """Cross-subject encoder with one learned query per target.

    The read-out of a target is linear in the attended vector, so the output projection
    of standard multi-head attention (a shared linear map before a per-target linear
    map) would add parameters without adding functions; it is left out.

    Parameters
    ----------
    n_targets : mapping of str to int
        Subject id -> number of targets of that subject.
    layer_dims : sequence of int
        Width of each layer's pooled features (one token per layer).
    d_model : int
        Common width of the layer tokens and target embeddings.
    n_heads : int
        Attention heads; must divide ``d_model``.
    dropout : float
        Dropout on the layer values and on the attention weights.
    shared_projection : bool
        One projection for every layer (layers of equal width only). Transformer layers
        write to one residual stream, so their features share coordinates; with a
        shared projection a target can only reach a layer's content by attending to
        it, which makes the attention over layers the model's layer choice. With one
        projection per layer the read-outs could select layers themselves and the
        attention would stay close to uniform.
    keys : {"layer", "token"}
        What the keys are computed from. ``"token"``: the full layer tokens (content
        plus layer embedding), so attention can vary from stimulus to stimulus.
        ``"layer"`` (default): the layer embeddings alone, so each target's attention is
        one distribution over layers, the same for every stimulus, and the values carry
        the stimulus. On simulated data with a planted layer per region, token keys left
        the attention within 0.02 of uniform after training (content dominates the
        keys); layer keys learn the planted layers.
    sparse_targets : bool
        Sparse gradients for the per-target embeddings and read-outs when ``targets``
        are given (train them with a sparse optimiser such as ``torch.optim.SparseAdam``).

    Notes
    -----
    The prediction of target ``t`` of a stimulus with layer features ``f_l`` is
    ``w_t . concat_h(sum_l a_thl W_v,h z_l) + b_t`` with ``z_l`` the projected,
    normalised layer tokens and ``a_thl`` the softmax over layers of the scaled
    dot product between the target's query and each token's key. Without a non-linearity
    after the attention it is a low-rank linear read-out of a learned mixture of layers:
    what is shared across subjects is the projection, what is individual is the query
    (which layers) and the read-out (which direction).
    """

    def __init__(self, n_targets: Mapping[str, int], layer_dims: Sequence[int], *,
                 d_model: int = 64, n_heads: int = 4, dropout: float = 0.1,
                 shared_projection: bool = True, keys: str = "layer",
                 sparse_targets: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if not layer_dims:
            raise ValueError("layer_dims must name at least one layer")
        self.layer_dims = [int(d) for d in layer_dims]
        self.d_model, self.n_heads = int(d_model), int(n_heads)
        if keys not in ("layer", "token"):
            raise ValueError(f"keys must be 'layer' or 'token', got {keys!r}")
        self.keys = keys
        self.sparse_targets = bool(sparse_targets)
        self.shared_projection = bool(shared_projection)
        if self.shared_projection and len(set(self.layer_dims)) > 1:
            raise ValueError(f"a shared projection needs layers of one width, got "
                             f"{sorted(set(self.layer_dims))}")
        n_proj = 1 if self.shared_projection else len(self.layer_dims)
        self.proj = nn.ModuleList(nn.Linear(d, d_model) for d in self.layer_dims[:n_proj])
        self.layer_embed = nn.Parameter(torch.randn(len(self.layer_dims), d_model)
                                        * (1.0 if keys == "layer" else 0.02))
        self.token_norm = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_k = nn.Linear(d_model, d_model, bias=False)
        self.to_v = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.queries = nn.ParameterDict()
        self.readout_w = nn.ParameterDict()
        self.readout_b = nn.ParameterDict()
        for subject, n in n_targets.items():
            self.add_subject(subject, n)

    # ------------------------------------------------------------------ subjects
    @property
    def subjects(self) -> list[str]:
        """Subject ids the model has targets for."""
        return list(self.queries.keys())

    def n_targets(self, subject: str) -> int:
        """Number of targets of ``subject``."""
        return self.queries[subject].shape[0]

    def add_subject(self, subject: str, n_targets: int) -> None:
        """Give ``subject`` fresh target embeddings and read-outs (nothing else changes).

        The new parameters are drawn from the default torch generator: seed it first
        for a reproducible initialisation.
        """
        if subject in self.queries:
            raise ValueError(f"subject {subject!r} already has targets")
        if int(n_targets) < 1:
            raise ValueError(f"subject {subject!r} needs at least one target, got {n_targets}")
        d = self.d_model
        # Zero queries: every target starts from uniform attention over layers, so its
        # layer preference comes from the data alone, not from its initialisation.
        # Zero read-outs: the first steps fit each target on the initial shared
        # features, and only then does the shared part receive aligned gradients.
        self.queries[subject] = nn.Parameter(torch.zeros(int(n_targets), d))
        self.readout_w[subject] = nn.Parameter(torch.zeros(int(n_targets), d))
        self.readout_b[subject] = nn.Parameter(torch.zeros(int(n_targets), 1))

    def subject_parameters(self, subject: str) -> list[nn.Parameter]:
        """The parameters that belong to ``subject`` alone."""
        return [self.queries[subject], self.readout_w[subject], self.readout_b[subject]]

    def freeze_shared(self, trainable_subjects: Sequence[str] = ()) -> None:
        """Freeze everything but the embeddings and read-outs of ``trainable_subjects``."""
        keep = {id(p) for s in trainable_subjects for p in self.subject_parameters(s)}
        for param in self.parameters():
            param.requires_grad_(id(param) in keep)

    # ------------------------------------------------------------------ forward
    def tokens(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Project the layers' features to tokens.

        Parameters
        ----------
        features : Tensor, shape (B, L, D), or a sequence of L tensors of shape (B, D_l)

        Returns
        -------
        tokens : Tensor, shape (B, L, d)
        """
        n_layers = len(self.layer_dims)
        if isinstance(features, torch.Tensor):
            if features.ndim != 3 or features.shape[1] != n_layers:
                raise ValueError(f"features must be (B, {n_layers}, D), got "
                                 f"{tuple(features.shape)}")
            if self.shared_projection:
                return self.token_norm(self.proj[0](features) + self.layer_embed)
            layers = features.unbind(1)
        else:
            layers = list(features)
            if len(layers) != n_layers:
                raise ValueError(f"expected {n_layers} layers, got {len(layers)}")
        projs = [self.proj[0]] * n_layers if self.shared_projection else self.proj
        z = torch.stack([proj(x) for proj, x in zip(projs, layers)], dim=1)
        return self.token_norm(z + self.layer_embed)

    def _attend(self, features, subject: str, targets: torch.Tensor | None):
        """Tokens (B, L, d), values (B, L, H, e) and attention ((S, H, L) or (B, S, H, L))."""
        if subject not in self.queries:
            raise KeyError(f"unknown subject {subject!r}; known: {self.subjects}")
        tok = self.tokens(features)
        query = self.queries[subject]
        if targets is not None:
            query = F.embedding(targets, query, sparse=self.sparse_targets)
        h = self.n_heads
        q = rearrange(self.to_q(query), "s (h e) -> s h e", h=h)
        v = self.dropout(rearrange(self.to_v(tok), "b l (h e) -> b l h e", h=h))
        if self.keys == "layer":  # one distribution over layers per target: (S, H, L)
            k = rearrange(self.to_k(self.layer_embed), "l (h e) -> l h e", h=h)
            attn = (torch.einsum("she,lhe->shl", q, k) / math.sqrt(q.shape[-1])).softmax(-1)
        else:  # stimulus-dependent: (B, S, H, L)
            k = rearrange(self.to_k(tok), "b l (h e) -> b l h e", h=h)
            attn = (torch.einsum("she,blhe->bshl", q, k) / math.sqrt(q.shape[-1])).softmax(-1)
        return tok, v, attn

    def attended(self, features, subject: str, targets: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Each target's attended vector, the input of its linear read-out.

        ``forward`` equals ``(attended(...) * readout_w[subject][targets]).sum(-1) +
        readout_b`` (without dropout), so read-outs can be refitted in closed form on
        it while everything else stays fixed.

        Returns
        -------
        z : Tensor, shape (B, S, d)
        """
        _, v, attn = self._attend(features, subject, targets)
        attn = self.dropout(attn)
        mix = "shl" if attn.ndim == 3 else "bshl"
        z = torch.einsum(f"blhe,{mix}->bshe", v, attn)
        return rearrange(z, "b s h e -> b s (h e)")

    def layer_terms(self, features, subject: str, targets: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Each layer's term of the predictions: attention times that layer's read-out.

        ``forward`` equals ``layer_terms(...).sum(-1) + readout_b`` (without dropout), so
        how much each layer drives a target's predicted response can be read off these
        terms, whatever the attention weight alone says (a layer with a large weight but
        values that the read-out ignores contributes little).

        Returns
        -------
        terms : Tensor, shape (B, S, L)
        """
        _, v, attn = self._attend(features, subject, targets)
        w = self.readout_w[subject] if targets is None else self.readout_w[subject][targets]
        readout = torch.einsum("blhe,she->bshl", v,
                               rearrange(w, "s (h e) -> s h e", h=self.n_heads))
        mix = "shl" if attn.ndim == 3 else "bshl"
        return torch.einsum(f"bshl,{mix}->bsl", readout, self.dropout(attn))

    def forward(self, features, subject: str, targets: torch.Tensor | None = None, *,
                return_attention: bool = False):
        """Predict the responses of ``subject``'s targets to a batch of stimuli.

        Parameters
        ----------
        features : Tensor, shape (B, L, D), or a sequence of L tensors (B, D_l)
        subject : str
        targets : LongTensor, shape (S,), optional
            Indices of the targets to predict; all targets when None.
        return_attention : bool
            Also return the attention over layers, averaged over heads.

        Returns
        -------
        pred : Tensor, shape (B, S)
        attention : Tensor, shape (B, S, L)
            Only with ``return_attention``.
        """
        tok, v, attn = self._attend(features, subject, targets)
        w, b = self.readout_w[subject], self.readout_b[subject]
        if targets is not None:
            # Sparse gradients: a step touches the rows of the sampled targets only, so
            # its memory does not grow with the subject's number of targets.
            w = F.embedding(targets, w, sparse=self.sparse_targets)
            b = F.embedding(targets, b, sparse=self.sparse_targets)
        b = b.squeeze(1)
        h = self.n_heads
        # The read-out is linear, so read every layer's value out first, (B, S, H, L),
        # then mix with the attention: no (B, S, d) tensor is ever formed.
        readout = torch.einsum("blhe,she->bshl", v, rearrange(w, "s (h e) -> s h e", h=h))
        mix = "shl" if attn.ndim == 3 else "bshl"
        pred = torch.einsum(f"bshl,{mix}->bs", readout, self.dropout(attn)) + b
        if return_attention:
            att = attn.mean(dim=-2)
            return pred, (att.unsqueeze(0).expand(tok.shape[0], -1, -1) if att.ndim == 2
                          else att)
        return pred
