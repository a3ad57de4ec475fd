"""SnAp-1: the influence entries that one step reaches (Menick et al. 2021).

Equations (docs/theory.md §3.6): SnAp-n keeps the entries of the influence matrix ``M_t[i, (k, l)]`` that are
non-zero after n steps from a fresh start; for n = 1 these are the entries ``i = k`` (a row weight of unit k acts on
unit k first). Writing ``m_t[k, l] = M_t[k, (k, l)]`` and keeping only those entries in the exact recursion,

    m_t[k, l] = J_t[k, k] m_{t-1}[k, l] + p_{t,k} z_{t,l},      J_t[k, k] = d_{t,k} + p_{t,k} W_kk q_{t,k}
    dtheta[k, l] = sum_t c_{t,k} m_t[k, l]

In form A, ``J_t[k, k] = (1-alpha) + alpha W_kk f'(a_{t-1,k})``: e-prop's trace recursion plus the self-connection
term ``alpha W_kk f'(a_{t-1,k})``; with ``diag(W) = 0`` SnAp-1 is e-prop, in every form (e-prop keeps
``J_t ~ diag(d_t)``). It is also the gradient of the step with the other units' rates detached
(``Rule.detach = "other units' rates"``, :func:`neurorate.model.dynamics.step`), which the tests use as one of its
oracles.

Cost per trial and step: the trace update ``3 N P`` and the contraction ``2 N P`` FLOPs (e-prop's form B/C trace
cost); memory ``N P ~ N^2`` numbers per trial (:meth:`SnAp1.state_floats`), independent of T.

Fast path, form A at full precision (:func:`snap1_form_a_gradients`): unlike e-prop's, the trace does not factorise
(its decay ``J_t[k, k]`` depends on the postsynaptic unit), so the forward trace is a full ``N x P`` per trial. The
same sum in reverse time needs only a vector: ``delta_t = c_t + J_{t+1}[k, k] delta_{t+1}``, ``dW = alpha sum_t
delta_t r_{t-1}^T`` -- the backward pass of e-prop by detach (``delta_t = c_t + (1-alpha) delta_{t+1}``) with one more
element-wise term, at e-prop's FLOPs and BPTT's O(T B N) memory for the trajectory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from neurorate.learning.bptt import form_a_forward
from neurorate.learning.estimators import Step, jacobian_diagonal
from neurorate.model import dynamics as dyn
from neurorate.model import losses

if TYPE_CHECKING:
    from neurorate.backends.torch.ensemble import Ensemble


class SnAp1:
    """The one-step-reachable influence ``m (M, N, B, P)`` (unit first, so the contraction is one batched matmul).

    ``self_connection = False`` drops the ``W_kk`` term: the e-prop truncation (:class:`EpropTrace`).
    """

    stochastic = False
    self_connection = True

    @staticmethod
    def state_floats(n: int, n_in: int, batch: int) -> int:
        """The trace (updated in place) per network."""
        return batch * n * (n + n_in + 1)

    def init(self, m: int, batch: int, n: int, p: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m, n, batch, p, dtype=like.dtype, device=like.device)

    def step(self, trace: torch.Tensor, s: Step) -> torch.Tensor:
        decay = jacobian_diagonal(s) if self.self_connection else s.d
        trace.mul_(decay.transpose(1, 2).unsqueeze(-1))
        return trace.addcmul_(s.p.transpose(1, 2).unsqueeze(-1), s.z.unsqueeze(1))

    def gradients(self, trace: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        m, n, b, p = trace.shape
        c = signal.transpose(1, 2).reshape(m * n, 1, b)
        return torch.bmm(c, trace.view(m * n, b, p)).view(m, n, p)

    def fast(self, ens: Ensemble, rule, kind: str, x, target, mask):
        """:func:`snap1_form_a_gradients` in form A (None in forms B and C)."""
        if ens.form != "A":
            return None
        return snap1_form_a_gradients(ens, kind, x, target, mask, random_feedback=rule.random_feedback,
                                      self_connection=self.self_connection)


class EpropTrace(SnAp1):
    """The e-prop truncation as an estimator (``J_t ~ diag(d_t)``): the same gradient as the ``eprop`` rule's
    kernels (the estimator reading of ``detach = "presynaptic rates"``, :func:`neurorate.learning.estimators.
    estimator_for`)."""

    self_connection = False


class OneStepTrace(SnAp1):
    """The whole previous state detached (``J_t ~ 0``, ``m_t = Mbar_t``): the ``trunc1`` control as an estimator."""

    self_connection = False

    def step(self, trace: torch.Tensor, s: Step) -> torch.Tensor:
        trace.zero_()
        return trace.addcmul_(s.p.transpose(1, 2).unsqueeze(-1), s.z.unsqueeze(1))

    def fast(self, ens, rule, kind: str, x, target, mask):
        return None


@torch.no_grad()
def snap1_form_a_gradients(ens: Ensemble, kind: str, x, target, mask, random_feedback: bool = False,
                           self_connection: bool = True):
    """Form A SnAp-1 in reverse time (see the module docstring): one forward pass keeping the rates, then
    ``delta_t = psi_t * L_t + ((1-alpha) + alpha W_kk psi_t) * delta_{t+1}`` backwards, ``dW = alpha sum_t delta_t
    r_{t-1}^T``, ``dU = alpha sum_t delta_t x_t^T``, ``db = alpha sum_t delta_t``. Equal (to rounding) to the
    forward traces of :class:`SnAp1`."""
    p = ens.params
    m, n = ens.m, ens.n
    _, t_steps, b, _ = x.shape
    rates, flat, xs, y, g, state = form_a_forward(ens, kind, x, target, mask, "snap1")
    alpha, keep = ens.alpha, 1 - ens.alpha
    fb = ens.feedback.transpose(-1, -2) if random_feedback else p["w_out"]  # F^T (M, n_out, N)
    sig = torch.matmul(g, fb.unsqueeze(1), out=ens.workspace("snap1_sig", (m, t_steps, b, n), state))
    sig = sig.transpose(0, 1)  # L_t as rows, (T, M, B, N)
    self_w = alpha * torch.diagonal(p["w_rec"], dim1=-2, dim2=-1).unsqueeze(1) if self_connection else None
    delta = torch.zeros_like(state)
    d_sum = torch.zeros_like(state)
    g_rec = torch.zeros_like(p["w_rec"])
    g_in = torch.zeros_like(p["w_in"])
    for t in range(t_steps - 1, -1, -1):
        psi = dyn.fprime_from_rate(ens.activation, rates[t])
        # delta_t = psi_t L_t + J_{t+1}[k,k] delta_{t+1}, J_{t+1}[k,k] = (1-alpha) + alpha W_kk psi_t
        carry = delta * keep if self_w is None else delta.mul_(torch.addcmul(keep, self_w, psi))
        delta = torch.addcmul(carry, psi, sig[t])
        dt_ = delta.transpose(-1, -2)
        if t > 0:
            g_rec.baddbmm_(dt_, rates[t - 1])
        g_in.baddbmm_(dt_, xs[t])
        d_sum.add_(delta)
    g_rec.mul_(alpha)  # the factor alpha of dW = alpha sum_t delta_t r_{t-1}^T, applied once
    g_in.mul_(alpha)
    g_b = alpha * d_sum.sum(1, keepdim=True)
    g_flat = g.reshape(m, t_steps * b, -1)
    grads = {"w_rec": g_rec, "w_in": g_in, "b": g_b, "w_out": torch.matmul(g_flat.transpose(-1, -2), flat),
             "b_out": g_flat.sum(1, keepdim=True)}
    return losses.loss(kind, y, target, mask), losses.accuracy(kind, y, target, mask), grads
