"""Closed-form ridge read-outs on a trained encoder's representation.

Gradient training fits every target's read-out from the stimuli of one run and stops
early on a validation split, so per-target read-outs are both noisy and fitted on fewer
stimuli than ridge encoding uses. Once the shared part of an encoder is trained, the
read-out of each target is a linear regression of its responses on the target's own
attended vector: :func:`refit_readouts` solves it in closed form on every training
stimulus (fit and validation split together), with one ridge penalty per target chosen
by its exact leave-one-stimulus-out error, as :class:`brainhead.align.ridge.GroupRidgeCV`
does for ridge encoding. Nothing but the read-outs changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DEFAULT_ALPHAS", "refit_readouts", "ridge_readouts"]

#: Ridge penalties tried for each target (responses and attended vectors standardised).
DEFAULT_ALPHAS = tuple(np.logspace(-2, 5, 15).tolist())


def ridge_readouts(Z: torch.Tensor, Y: torch.Tensor, alphas: Sequence[float]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ridge regression per target, with an intercept and its own penalty.

    The penalty of each target minimises its exact leave-one-out squared error
    (``e_i / (1 - h_ii)`` with ``h`` the hat matrix of the centred fit, plus ``1/n`` for
    the intercept); ties keep the smaller penalty.

    Parameters
    ----------
    Z : Tensor, shape (T, n, d)
        Each target's design matrix: its attended vector for ``n`` stimuli.
    Y : Tensor, shape (T, n)
        Each target's responses to the same stimuli.
    alphas : sequence of float
        Penalties to try, all > 0.

    Returns
    -------
    W : Tensor, shape (T, d)
    b : Tensor, shape (T,)
    alpha : Tensor, shape (T,)
        The chosen penalty of each target.
    """
    if Z.ndim != 3 or Y.shape != Z.shape[:2]:
        raise ValueError(f"Z must be (T, n, d) and Y (T, n); got {tuple(Z.shape)} and "
                         f"{tuple(Y.shape)}")
    if Z.shape[1] < 3:
        raise ValueError(f"a ridge read-out needs at least 3 stimuli, got {Z.shape[1]}")
    alphas = [float(a) for a in alphas]
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas must be positive, got {alphas}")
    n = Z.shape[1]
    z_mean, y_mean = Z.mean(1, keepdim=True), Y.mean(1, keepdim=True)
    Zc, Yc = Z - z_mean, Y - y_mean
    lam, U = torch.linalg.eigh(Zc.transpose(1, 2) @ Zc)      # (T, d), (T, d, d)
    lam = lam.clamp_min(0)
    ZU = Zc @ U                                                 # (T, n, d)
    uy = (ZU.transpose(1, 2) @ Yc[..., None])[..., 0]           # (T, d)
    al = torch.tensor(sorted(alphas), dtype=Z.dtype, device=Z.device)
    gain = 1.0 / (lam[..., None] + al)                          # (T, d, A)
    # every penalty at once: two batched products over the stimuli
    fitted = ZU @ (gain * uy[..., None])                        # (T, n, A)
    hat = ZU.square() @ gain + 1.0 / n                          # (T, n, A)
    loo = ((Yc[..., None] - fitted) / (1.0 - hat).clamp_min(1e-9)).square().sum(1)
    best = loo.argmin(1)                                        # first minimum: smaller alpha
    coef = torch.gather(gain, 2, best[:, None, None].expand(-1, gain.shape[1], 1))[..., 0] * uy
    W = (U @ coef[..., None])[..., 0]
    b = y_mean[:, 0] - (z_mean[:, 0] * W).sum(-1)
    chosen = al[best]
    return W, b, chosen


@torch.no_grad()
def refit_readouts(net: torch.nn.Module, features: torch.Tensor, responses: torch.Tensor,
                   subject: str, *, alphas: Sequence[float] = DEFAULT_ALPHAS,
                   chunk: int = 2048) -> np.ndarray:
    """Replace ``subject``'s read-outs of ``net`` by per-target ridge solutions.

    Parameters
    ----------
    net : nn.Module
        An encoder with ``attended(features, subject, targets) -> (B, S, d)`` and
        ``readout_w[subject]`` (n_targets, d), ``readout_b[subject]`` (n_targets, 1),
        e.g. :class:`encoders.voxel_xattn.VoxelCrossAttention`.
    features : Tensor, shape (n, L, D)
        The model features of the training stimuli, as the encoder sees them.
    responses : Tensor, shape (n, n_targets)
        ``subject``'s responses to the same stimuli, as the encoder is trained on them.
    subject : str
    alphas : sequence of float
    chunk : int
        Targets solved at once (memory ~ chunk * n * d).

    Returns
    -------
    alpha : ndarray, shape (n_targets,)
        The penalty chosen for each target.
    """
    was_training = net.training
    net.eval()
    w, b = net.readout_w[subject], net.readout_b[subject]
    n_t = w.shape[0]
    if responses.shape != (features.shape[0], n_t):
        raise ValueError(f"responses must be ({features.shape[0]}, {n_t}) for subject "
                         f"{subject!r}, got {tuple(responses.shape)}")
    chosen = []
    for t0 in range(0, n_t, chunk):
        t = torch.arange(t0, min(t0 + chunk, n_t), device=w.device)
        Z = net.attended(features, subject, t).transpose(0, 1).double()   # (S, n, d)
        Y = responses[:, t].T.to(Z)                                        # (S, n)
        W, bias, alpha = ridge_readouts(Z, Y, alphas)
        w.data[t] = W.to(w.dtype)
        b.data[t, 0] = bias.to(b.dtype)
        chosen.append(alpha.cpu().numpy())
    net.train(was_training)
    return np.concatenate(chosen)
