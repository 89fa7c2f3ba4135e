"""Leaky recurrent network whose units learn their own timescales, with one head per depth.

After Khajehabdollahi et al., "Emergent mechanisms for long timescales depend on training
curriculum and affect performance in memory tasks" (ICLR 2024). Every unit ``i`` has a
timescale ``tau_i >= 1`` and is updated as

.. math::

    h_t = f\\big((1 - 1/\\tau) \\odot h_{t-1} + (W_{rec} h_{t-1} + W_{in} x_t + b) / \\tau\\big)

with no self-connections in ``W_rec`` (its diagonal is masked to zero) and ``f`` a
pointwise nonlinearity (leaky ReLU by default, as in the paper). ``tau = 1`` is a plain
RNN unit; larger ``tau`` integrates its input over about ``tau`` steps.

**How tau stays >= 1**: by parametrisation, ``tau = 1 + softplus(tau_raw)`` with
``tau_raw`` the trained parameter; no clamping, so tau keeps a gradient everywhere and
can never cross 1 whatever the optimiser does.

Read-out heads are linear maps of the hidden state, one per memory depth (``N`` of the
paper's tasks, or a lag of a neural-stream decoder), held in a :class:`~torch.nn.ModuleDict`
by name; :meth:`MemoryRNN.add_head` adds one (the multi-head curriculum adds the head of
``N + 1`` when ``N`` is learnt).

Shapes: ``B`` sequences, ``T`` time steps, ``I`` inputs, ``H`` units, ``O`` outputs of a
head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["NONLINEARITIES", "MemoryRNN", "tau_raw_for"]

#: Nonlinearities ``f`` that ``nonlinearity`` may name.
NONLINEARITIES = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "relu": F.relu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}


def tau_raw_for(tau: float | torch.Tensor) -> torch.Tensor:
    """The ``tau_raw`` whose ``1 + softplus(tau_raw)`` is ``tau`` (which must be > 1)."""
    tau = torch.as_tensor(tau, dtype=torch.float32)
    if bool((tau <= 1).any()):
        raise ValueError(f"tau must be > 1 to be represented as 1 + softplus(raw), got "
                         f"{tau.min().item()}")
    excess = tau - 1.0
    return excess + torch.log(-torch.expm1(-excess))  # inverse softplus, stable


class MemoryRNN(nn.Module):
    """Leaky RNN with a trainable timescale per unit and one linear head per depth.

    Parameters
    ----------
    n_inputs : int
        ``I``, input channels per time step.
    n_units : int
        ``H``, recurrent units.
    heads : mapping of str to int or sequence of str
        Initial heads: name -> number of outputs; a sequence of names gives each
        ``n_outputs`` outputs.
    n_outputs : int
        Default number of outputs of a head (2 for a binary task read with
        cross-entropy).
    nonlinearity : {"leaky_relu", "relu", "tanh", "identity"}
    tau_init : float
        Initial timescale of every unit (> 1; the paper starts near 1).
    learn_tau : bool
        Train the timescales (False keeps them at ``tau_init``).
    rec_gain : float
        Standard deviation of ``W_rec``'s initial entries times ``sqrt(H)``.

    Attributes
    ----------
    tau : Tensor, shape (H,)
        Current timescales (``1 + softplus(tau_raw)``).
    """

    def __init__(self, n_inputs: int, n_units: int,
                 heads: Mapping[str, int] | Sequence[str] = ("0",), *, n_outputs: int = 2,
                 nonlinearity: str = "leaky_relu", tau_init: float = 1.2,
                 learn_tau: bool = True, rec_gain: float = 1.0):
        super().__init__()
        if int(n_inputs) < 1 or int(n_units) < 2:
            raise ValueError(f"need n_inputs >= 1 and n_units >= 2, got {n_inputs}, {n_units}")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, "
                             f"got {nonlinearity!r}")
        self.n_inputs, self.n_units = int(n_inputs), int(n_units)
        self.n_outputs = int(n_outputs)
        self.nonlinearity = nonlinearity
        self.input = nn.Linear(self.n_inputs, self.n_units)
        w = torch.randn(self.n_units, self.n_units) * (float(rec_gain) / math.sqrt(self.n_units))
        mask = 1.0 - torch.eye(self.n_units)
        self.register_buffer("rec_mask", mask, persistent=False)
        self.W_rec = nn.Parameter(w * mask)
        # the masked diagonal gets no gradient; zero it in the gradient as well, so that
        # weight decay and optimiser moments never touch it
        self.W_rec.register_hook(lambda g: g * self.rec_mask)
        self.tau_raw = nn.Parameter(tau_raw_for(torch.full((self.n_units,), float(tau_init))),
                                    requires_grad=bool(learn_tau))
        self.heads = nn.ModuleDict()
        items = heads.items() if isinstance(heads, Mapping) else ((h, None) for h in heads)
        for name, n_out in items:
            self.add_head(name, n_out)

    # ------------------------------------------------------------------ parameters
    @property
    def tau(self) -> torch.Tensor:
        return 1.0 + F.softplus(self.tau_raw)

    @property
    def recurrent_weights(self) -> torch.Tensor:
        """``W_rec`` with its diagonal masked, (H, H); row ``i`` feeds unit ``i``."""
        return self.W_rec * self.rec_mask

    def add_head(self, name: str, n_outputs: int | None = None) -> nn.Linear:
        """Add a linear read-out head ``name`` (an error if it exists); return it."""
        name = str(name)
        if name in self.heads:
            raise ValueError(f"head {name!r} exists already; heads: {list(self.heads)}")
        head = nn.Linear(self.n_units, int(n_outputs or self.n_outputs))
        self.heads[name] = head
        return head

    # ------------------------------------------------------------------ forward
    def states(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states at every step.

        Parameters
        ----------
        x : Tensor, shape (B, T, I)
        h0 : Tensor, shape (B, H), optional
            Initial state (zeros by default).

        Returns
        -------
        h : Tensor, shape (B, T, H)
        """
        if x.ndim != 3 or x.shape[2] != self.n_inputs:
            raise ValueError(f"x must be (batch, time, {self.n_inputs}), got {tuple(x.shape)}")
        f = NONLINEARITIES[self.nonlinearity]
        inv_tau = 1.0 / self.tau
        decay = 1.0 - inv_tau
        # everything that does not depend on h is computed for all steps at once
        drive = rearrange(self.input(x) * inv_tau, "b t h -> t b h")
        w_eff = (self.recurrent_weights * inv_tau[:, None]).T  # h @ w_eff = (W h) / tau
        h = x.new_zeros(x.shape[0], self.n_units) if h0 is None else h0
        out = []
        for drive_t in drive:
            h = f(torch.addmm(torch.addcmul(drive_t, h, decay), h, w_eff))
            out.append(h)
        return rearrange(torch.stack(out), "t b h -> b t h")

    def read(self, h: torch.Tensor, heads: Sequence[str] | None = None
             ) -> dict[str, torch.Tensor]:
        """Outputs of ``heads`` (all by default) for states ``h`` (..., H) -> (..., O)."""
        names = list(self.heads) if heads is None else [str(n) for n in heads]
        return {n: self.heads[n](h) for n in names}

    def forward(self, x: torch.Tensor, heads: Sequence[str] | None = None, *,
                last: bool = False, h0: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Outputs of the heads at every step, (B, T, O) each, or (B, O) with ``last``."""
        h = self.states(x, h0)
        return self.read(h[:, -1] if last else h, heads)
