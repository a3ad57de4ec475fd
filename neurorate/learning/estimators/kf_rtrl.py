"""KF-RTRL: an unbiased Kronecker-factored estimate of the influence matrix (Mujika, Meier & Steger 2018).

Equations (docs/theory.md §3.6): in this model the immediate influence is already a Kronecker product,
``Mbar_t[i, (k, l)] = D_t[i, k] z_{t,l}`` with ``D_t = diag(p_t)``, so per trial the influence is carried as one
``M_t[i, (k, l)] ~ A_t[i, k] u_{t,l}`` (``A_t`` N x N, ``u_t`` over the P presynaptic entries). The exact update of
that product, ``J_t A_{t-1} (x) u_{t-1} + D_t (x) z_t``, is a sum of two Kronecker products; with two independent
random signs ``c1, c2`` per trial it is replaced by one:

    u_t = c1 rho1 u_{t-1} + c2 rho2 z_t,      A_t = c1 (J_t A_{t-1}) / rho1 + c2 D_t / rho2
    dtheta[k, l] = sum_t (c_t^T A_t)_k u_{t,l}

``E[A_t (x) u_t]`` is the exact update because ``E[c1 c2] = 0``: the estimate is unbiased. The normalisers
``rho1 = sqrt(|J_t A_{t-1}| / |u_{t-1}|)``, ``rho2 = sqrt(|D_t| / |z_t|)`` (Frobenius norms per trial) minimise the
variance; the signs are drawn per batch from ``(seed, first step)`` (:func:`neurorate.learning.estimators.draw_seed`).

Cost per trial and step: ``J_t A_{t-1}`` is an N x N by N x N product, ``2 N^3`` FLOPs; the rest O(N^2 + P).
Memory: ``A`` and ``u``, ``N^2 + P`` per trial (:meth:`KFRTRL.state_floats`), independent of T. Its variance is
lower than UORO's (the Kronecker factor keeps the structure of ``Mbar``) at a cost of one more power of N in time.
"""

from __future__ import annotations

import torch

from neurorate.learning.estimators import Step, jacobian, safe_ratio_sqrt


class KFRTRL:
    """``(u (M, B, P), A (M, B, N, N))``, the Kronecker-factored influence estimate ``A (x) u`` of every trial."""

    stochastic = True

    @staticmethod
    def state_floats(n: int, n_in: int, batch: int) -> int:
        """``A``, ``J A`` and the Jacobian's scratch, and ``u``, per network."""
        return batch * (3 * n * n + 2 * (n + n_in + 1))

    @staticmethod
    def noise_shape(m: int, batch: int, n: int) -> tuple[int, ...]:
        """Two signs per trial: ``c1, c2``."""
        return (2, m, batch)

    def init(self, m: int, batch: int, n: int, p: int, like: torch.Tensor):
        z = lambda *shape: torch.zeros(*shape, dtype=like.dtype, device=like.device)  # noqa: E731
        return z(m, batch, p), z(m, batch, n, n)

    def step(self, state, s: Step):
        u, a = state
        ja = jacobian(s, a)  # (M, B, N, N): J_t A_{t-1}
        rho1 = safe_ratio_sqrt(ja.flatten(2).norm(dim=-1), u.norm(dim=-1))  # (M, B)
        rho2 = safe_ratio_sqrt(s.p.norm(dim=-1), s.z.norm(dim=-1))
        c1, c2 = s.noise[0], s.noise[1]
        u = (c1 * rho1).unsqueeze(-1) * u + (c2 * rho2).unsqueeze(-1) * s.z
        a = ja.mul_((c1 / rho1)[..., None, None])
        torch.diagonal(a, dim1=-2, dim2=-1).addcmul_((c2 / rho2).unsqueeze(-1), s.p)
        return u, a

    def gradients(self, state, signal: torch.Tensor) -> torch.Tensor:
        u, a = state
        ca = torch.matmul(signal.unsqueeze(-2), a).squeeze(-2)  # (M, B, N): sum_i c_i A[i, k]
        return torch.bmm(ca.transpose(1, 2), u)
