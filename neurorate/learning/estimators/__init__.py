"""Learning rules as estimators of the influence matrix (docs/theory.md §3.6; docs/rules.md).

Every online rule of a rate network estimates the *influence matrix* ``M_t = ds_t/dtheta`` of the state ``s_t``
(``a_t`` in form A, ``h_t`` in forms B and C) with respect to the weights ``theta_k = [W_k., U_k., b_k]`` of unit k.
The exact influence obeys

    M_t = J_t M_{t-1} + Mbar_t,   J_t = diag(d_t) + diag(p_t) W diag(q_t),   Mbar_t[i, (k, l)] = delta_ik p_t,k z_t,l

with ``z_t = [pre_{t-1}, x_t, 1]`` (``P = N + n_in + 1`` presynaptic entries of a row) and, per form,

    A   d = 1 - alpha,               p = alpha,             q = f'(a_{t-1})
    B   d = (1 - alpha) f'(u_t),     p = alpha f'(u_t),     q = 1
    C   d = 1 - alpha,               p = alpha f'(u_t),     q = 1

and the gradient is ``sum_t c_t^T M_t`` with the learning signal ``c_t = dl_t/ds_t = o_t * (F dl_t/dy_t)``
(``o_t = f'(a_t)`` in form A, 1 in B and C; ``F = W_out^T``, or the fixed random B of a random-feedback rule).
The readout ``W_out``, ``b_out`` always gets its exact local gradient.

An estimator is a class with a small protocol, vectorised over the M networks and the B trials of a batch
(every tensor has the leading dimensions ``(M, B)``, weights ``(M, N, N)``):

* ``init(m, batch, n, p, like)``: the zero estimate of M networks and ``batch`` trials (``like``: dtype/device);
* ``step(state, step)``: the estimate at step t from that at t-1 and this step's :class:`Step` (may update the
  state in place and return it);
* ``gradients(state, signal)``: this step's contribution ``sum_b c_t^T M_t``, ``(M, N, P)``, from ``signal = c_t``
  ``(M, B, N)``;
* ``state_floats(n, n_in, batch)`` (static): numbers kept per network (the estimate and its scratch), which the
  memory preflight multiplies by M and the dtype's size;
* ``stochastic`` (class attribute) with ``noise_shape(m, batch, n)`` (static): the random signs +-1 it uses per
  step, handed to it as ``step.noise``; optional ``fast(ens, rule, kind, x, target, mask)``: the same gradient by a
  faster kernel, or None where it has none.

:func:`estimator_gradients` runs any estimator on an ensemble (the torch backend calls it for every rule whose
:class:`~neurorate.learning.registry.Rule` names an ``estimator``); :func:`jacobian` applies ``J_t``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from neurorate.learning.registry import get_rule
from neurorate.model import dynamics as dyn
from neurorate.model import losses

if TYPE_CHECKING:
    from neurorate.backends.torch.ensemble import Ensemble


class Step(NamedTuple):
    """What an estimator sees of step t, every tensor ``(M, B, ...)``: ``J_t = diag(d) + diag(p) W diag(q)``,
    ``Mbar_t[i, (k, l)] = delta_ik p_k z_l``.

    d, p : ``(M, B, N)``; q : ``(M, B, N)`` or None (all ones); z : ``(M, B, P)`` = ``[pre_{t-1}, x_t, 1]``;
    w : ``W_rec (M, N, N)`` as the network computes with it; noise : this step's random signs of a stochastic
    estimator (its ``noise_shape``; None for a deterministic one).
    """

    d: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor | None
    z: torch.Tensor
    w: torch.Tensor
    noise: torch.Tensor | None = None


def jacobian(step: Step, v: torch.Tensor) -> torch.Tensor:
    """``J_t v`` for ``v (M, B, N, K)`` (the unit index third), without forming ``J_t``: ``d v + p (W (q v))``."""
    qv = v if step.q is None else step.q.unsqueeze(-1) * v
    out = torch.matmul(step.w.unsqueeze(1), qv)
    return out.mul_(step.p.unsqueeze(-1)).addcmul_(step.d.unsqueeze(-1), v)


def jacobian_diagonal(step: Step) -> torch.Tensor:
    """``J_t[k, k] = d_k + p_k W_kk q_k``, ``(M, B, N)``."""
    wd = torch.diagonal(step.w, dim1=-2, dim2=-1).unsqueeze(1)
    return step.d + step.p * (wd if step.q is None else wd * step.q)


def draw_signs(shape, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Independent random signs +-1 of ``shape``, drawn on the CPU from ``seed`` and moved to ``like``'s device in
    one copy: the same draws on every device (a CUDA run repeats the CPU's numbers)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randint(0, 2, tuple(shape), generator=gen)
    return u.to(like.dtype).mul_(2).sub_(1).to(like.device)


def safe_ratio_sqrt(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``sqrt(num / den)`` where both are positive, else 1 (the normalisers of UORO and KF-RTRL: any positive
    value keeps the estimate unbiased; 1 where one factor is still zero)."""
    ok = (num > 0) & (den > 0)
    return torch.where(ok, torch.sqrt(num / torch.where(ok, den, torch.ones_like(den))), torch.ones_like(num))


def draw_seed(seed: int, step0: int) -> int:
    """The seed of a batch's draws: from ``(seed, step0)``, so that a run repeats its draws bit for bit and no two
    batches of one run share them."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step0)]).generate_state(1, np.uint64)[0] >> 1)


def step_factors(form: str, alpha, prev: torch.Tensor, pre: torch.Tensor, fprime, shape):
    """``(d, p, q)`` of :class:`Step` for ``form``: ``prev`` is the state ``s_{t-1}``, ``pre`` the pre-activation of
    step t (``a_t`` or ``u_t``), ``alpha`` broadcastable to ``shape = (M, B, N)``."""
    alpha = torch.as_tensor(alpha, dtype=prev.dtype, device=prev.device)
    if form == "A":
        return (1 - alpha).expand(shape), alpha.expand(shape), fprime(prev)
    psi = fprime(pre)
    if form == "B":
        return (1 - alpha) * psi, alpha * psi, None
    return (1 - alpha).expand(shape), alpha * psi, None


DETACH_ESTIMATORS = {"nothing": "neurorate.learning.estimators.rtrl:RTRL",
                     "presynaptic rates": "neurorate.learning.estimators.snap1:EpropTrace",
                     "whole previous state": "neurorate.learning.estimators.snap1:OneStepTrace",
                     "other units' rates": "neurorate.learning.estimators.snap1:SnAp1"}
"""The estimator that computes each ``Rule.detach`` (what the truncation keeps of ``J_t``: all of it, ``diag(d_t)``,
nothing, its diagonal): every "detach x feedback" rule is one of these with its feedback."""


def estimator_for(rule):
    """A fresh estimator of ``rule``: its own (``Rule.estimator``), else the one of its detach
    (:data:`DETACH_ESTIMATORS`): the detach x feedback family read as estimators, with the numbers of its kernels."""
    import importlib

    r = get_rule(rule)
    if r.estimator:
        return r.make_estimator()
    module, _, attr = DETACH_ESTIMATORS[r.detach].partition(":")
    return getattr(importlib.import_module(module), attr)()


def split(g: torch.Tensor, n: int, n_in: int) -> dict[str, torch.Tensor]:
    """``(M, N, P)`` row gradients -> ``w_rec (M, N, N)``, ``w_in (M, N, n_in)``, ``b (M, 1, N)``."""
    return {"w_rec": g[..., :n].contiguous(), "w_in": g[..., n:n + n_in].contiguous(),
            "b": g[..., n + n_in].unsqueeze(1).contiguous()}


@torch.no_grad()
def estimator_gradients(ens: Ensemble, rule, kind: str, x, target, mask, quant=None, step0: int = 0, seed: int = 0,
                        fast: bool = True):
    """Loss, accuracy and the gradient estimate of ``rule``'s estimator (no autograd), ``(loss (M,), accuracy (M,),
    grads)`` like :func:`neurorate.backends.torch.gradients.gradients`. A rule without an estimator of its own runs
    the estimator of its detach (:func:`estimator_for`).

    The forward pass is :func:`neurorate.backends.torch.gradients.forward`'s, on a hardware profile's grids when
    ``quant`` quantises (the estimate itself is kept at full precision, with straight-through derivatives, as
    autograd's BPTT is under a profile). ``seed`` and ``step0`` key a stochastic estimator's draws
    (:func:`draw_seed`). ``fast``: use the estimator's faster kernel where it has one (same numbers).
    """
    r = get_rule(rule)
    est = estimator_for(r)
    quantising = quant is not None and quant.enabled
    if fast and not quantising and hasattr(est, "fast"):
        out = est.fast(ens, r, kind, x, target, mask)
        if out is not None:
            return out
    w = dyn.on_grid(ens.params, quant) if quantising else ens.params
    f, fprime = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    _, t_steps, b, n_in = x.shape
    p_len = n + n_in + 1
    drv = dyn.drive_sequence(x, w["w_in"], w["b"])
    feedback = ens.feedback if r.random_feedback else w["w_out"].transpose(-1, -2)
    norm = losses.normalizer(kind, target, mask)
    noise = (draw_signs((t_steps,) + tuple(est.noise_shape(m, b, n)), draw_seed(seed, step0), drv)
             if est.stochastic else None)
    state = torch.zeros(m, b, n, dtype=drv.dtype, device=drv.device)
    ones = torch.ones(m, b, 1, dtype=drv.dtype, device=drv.device)
    est_state = est.init(m, b, n, p_len, drv)
    g_theta = torch.zeros(m, n, p_len, dtype=drv.dtype, device=drv.device)
    g_out = torch.zeros_like(w["w_out"])
    g_bout = torch.zeros_like(w["b_out"])
    ys = []
    for t in range(t_steps):
        k = step0 + t
        prev = state
        pre_prev = dyn.rate(prev, ens.form, f)
        state, pre = dyn.step(prev, drv[:, t], w["w_rec"], ens.alpha, ens.form, f)
        if quantising:
            state = quant.state(state, step=k)
        d, p, q = step_factors(ens.form, ens.alpha, prev, pre, fprime, (m, b, n))
        z = torch.cat([pre_prev, x[:, t].expand(m, b, n_in), ones], -1)
        est_state = est.step(est_state, Step(d, p, q, z, w["w_rec"], None if noise is None else noise[t]))
        r_t = dyn.rate(state, ens.form, f)
        if quantising:
            r_t = quant.rate(r_t, step=k)
        y = dyn.readout(r_t, w["w_out"], w["b_out"])
        ys.append(y)
        g = losses.output_grad(kind, y, target[..., t, :, :] if kind == "mse" else target[..., t, :],
                               mask[..., t, :, :] if kind == "mse" else mask[..., t, :], norm)
        signal = dyn.learning_signal(g, feedback)
        if ens.form == "A":
            signal = signal * fprime(state)
        g_theta += est.gradients(est_state, signal)
        g_out += torch.matmul(g.transpose(-1, -2), r_t)
        g_bout += g.sum(-2, keepdim=True)
    y = torch.stack(ys, 1)
    grads = {**split(g_theta, n, n_in), "w_out": g_out, "b_out": g_bout}
    return losses.loss(kind, y, target, mask), losses.accuracy(kind, y, target, mask), grads
