"""UORO: an unbiased rank-one estimate of the influence matrix (Tallec & Ollivier 2018).

Equations (docs/theory.md §3.6): per trial the influence is carried as one outer product
``M_t ~ s_t theta_t^T`` (``s_t`` over the N units, ``theta_t`` shaped like the row weights, ``N x P``). With
independent random signs ``nu_t`` (one per unit) and ``E[nu nu^T] = I``, ``Mbar_t = E[nu nu^T Mbar_t]``, and
``nu^T Mbar_t = (nu * p_t) z_t^T`` is itself an outer product, so

    s_t     = rho0 J_t s_{t-1} + rho1 nu_t
    theta_t = theta_{t-1} / rho0 + (nu_t * p_t) z_t^T / rho1
    dtheta  = sum_t (c_t . s_t) theta_t

``E[s_t theta_t^T] = J_t E[s_{t-1} theta_{t-1}^T] + Mbar_t``: the cross terms have mean zero because the signs are
independent of everything before them, so the estimate of ``M_t`` and of the gradient is unbiased. The normalisers
minimise its variance: ``rho0 = sqrt(|theta_{t-1}| / |J_t s_{t-1}|)``, ``rho1 = sqrt(|(nu * p) z^T| / |nu|)`` (norms
per trial; they depend on the signs only through ``|nu|`` and ``|nu * p|``, which signs do not change). The signs
are drawn per batch from ``(seed, first step)`` (:func:`neurorate.learning.estimators.draw_seed`): a run repeats them
bit for bit, on every device.

Cost per trial and step: ``J_t s`` ``2 N^2`` FLOPs, the ``theta`` update ``~3 N P`` and the contraction ``2 N P``:
O(N^2), e-prop's order. Memory: ``theta`` and ``s``, ``N P + N ~ N^2`` per trial (:meth:`UORO.state_floats`),
independent of T. The price is variance: one draw's gradient points anywhere near the truth only on average
(``nr.gradient_alignment`` measures it; the variance of a mean over S draws falls as 1/S).
"""

from __future__ import annotations

import torch

from neurorate.learning.estimators import Step, jacobian, safe_ratio_sqrt


class UORO:
    """``(s (M, B, N), theta (M, B, N, P))``, the rank-one influence estimate ``s theta^T`` of every trial."""

    stochastic = True

    @staticmethod
    def state_floats(n: int, n_in: int, batch: int) -> int:
        """``theta`` and its update, ``s`` and its Jacobian product, per network."""
        return batch * (2 * n * (n + n_in + 1) + 4 * n)

    @staticmethod
    def noise_shape(m: int, batch: int, n: int) -> tuple[int, ...]:
        """One sign per unit and trial: ``nu_t``."""
        return (m, batch, n)

    def init(self, m: int, batch: int, n: int, p: int, like: torch.Tensor):
        z = lambda *shape: torch.zeros(*shape, dtype=like.dtype, device=like.device)  # noqa: E731
        return z(m, batch, n), z(m, batch, n, p)

    def step(self, state, s: Step):
        sv, theta = state
        nu = s.noise
        js = jacobian(s, sv.unsqueeze(-1)).squeeze(-1)
        h = nu * s.p  # nu^T Mbar_t = h z^T
        rho0 = safe_ratio_sqrt(theta.flatten(2).norm(dim=-1), js.norm(dim=-1))  # (M, B)
        rho1 = safe_ratio_sqrt(h.norm(dim=-1) * s.z.norm(dim=-1), nu.norm(dim=-1))
        sv = js.mul_(rho0.unsqueeze(-1)).addcmul_(rho1.unsqueeze(-1), nu)
        theta = theta.div_(rho0[..., None, None])
        theta.addcmul_((h / rho1.unsqueeze(-1)).unsqueeze(-1), s.z.unsqueeze(-2))
        return sv, theta

    def gradients(self, state, signal: torch.Tensor) -> torch.Tensor:
        sv, theta = state
        m, b, n, p = theta.shape
        weight = (signal * sv).sum(-1)  # (M, B): c_t . s_t per trial
        return torch.bmm(weight.unsqueeze(1), theta.view(m, b, n * p)).view(m, n, p)
