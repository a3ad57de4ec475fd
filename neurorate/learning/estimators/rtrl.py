"""RTRL: the exact gradient forward in time from the whole influence matrix (Williams & Zipser 1989).

Equations (docs/theory.md §3.6; the notation of :mod:`neurorate.learning.estimators`): per trial the influence
``M_t[i, (k, l)] = ds_{t,i}/dtheta_{k,l}`` of every state on every row weight (``theta_k = [W_k., U_k., b_k]``,
``P = N + n_in + 1`` entries per row) is carried exactly,

    M_t = J_t M_{t-1} + Mbar_t,    J_t = diag(d_t) + diag(p_t) W diag(q_t),    Mbar_t[i, (k, l)] = delta_ik p_k z_l

and the gradient is ``sum_t c_t^T M_t``, equal to BPTT's (to rounding; the oracle tests pin it to 1e-10 in float64
for every form, activation and loss). Its use is as ground truth: the reference every online estimate is
measured against (``nr.gradient_alignment``).

Cost per trial and step: ``J_t M_{t-1}`` is a product of ``N x N`` by ``N x N P``: ``2 N^3 P ~ 2 N^4`` FLOPs; the
gradient contraction ``2 N^2 P``. Memory: the influence ``N^2 P ~ N^3`` numbers per trial, about three copies
while a step runs (:meth:`RTRL.state_floats`): at N = 128, B = 32 that is 0.2 G numbers per network. An oracle for
small networks, not a training rule for large ones; the memory preflight refuses what does not fit.
"""

from __future__ import annotations

import torch

from neurorate.learning.estimators import Step, jacobian


class RTRL:
    """The exact influence ``M (M, B, N, N, P)`` (``[i, k, l] = ds_i/dtheta_kl``)."""

    stochastic = False

    @staticmethod
    def state_floats(n: int, n_in: int, batch: int) -> int:
        """The influence and two scratch copies (``q M`` and ``W (q M)``) per network."""
        return 3 * batch * n * n * (n + n_in + 1)

    def init(self, m: int, batch: int, n: int, p: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m, batch, n, n, p, dtype=like.dtype, device=like.device)

    def step(self, infl: torch.Tensor, s: Step) -> torch.Tensor:
        m, b, n, _, p = infl.shape
        new = jacobian(s, infl.view(m, b, n, n * p)).view(m, b, n, n, p)
        # + Mbar_t: the diagonal blocks i = k get p_k z_l
        torch.diagonal(new, dim1=2, dim2=3).add_((s.p.unsqueeze(-1) * s.z.unsqueeze(-2)).transpose(-1, -2))
        return new

    def gradients(self, infl: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        m, b, n, _, p = infl.shape
        return torch.bmm(signal.reshape(m, 1, b * n), infl.reshape(m, b * n, n * p)).view(m, n, p)
