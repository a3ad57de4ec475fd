"""e-prop and RFLO: the eligibility traces run forward in time (Bellec et al. 2020; Murray 2019; docs/rules.md).

The rules ``eprop``, ``eprop_online``, ``eprop_random`` and ``rflo`` keep only the neuron-internal
dependence of the state on the weights (the presynaptic rates are detached) and send the output error
through ``W_out^T`` or the fixed random ``B`` (:func:`neurorate.learning.feedback.feedback_matrix`). The
recursion of the traces is :func:`neurorate.model.dynamics.trace_step`; this module holds the e-prop
implementations of a torch ensemble (:class:`neurorate.backends.torch.ensemble.Ensemble`), side by side:

* :func:`online_gradients`: explicit forward traces, any form, rounded to a hardware profile's grids;
* :func:`factorized_gradients`: form A, where the trace factorises into ``psi_t * rbar_t`` (one fused pass);
* :func:`lif_online_gradients`: the spiking (LIF/ALIF) variant, with the adaptation trace (Bellec et al. 2020).

Rate kernels: inputs ``x (Mx, T, B, n_in)`` with ``Mx`` 1 or M; each returns ``(loss (M,), accuracy (M,), grads)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from neurorate.errors import NeurorateError
from neurorate.learning.registry import get_rule
from neurorate.model import dynamics as dyn
from neurorate.model import losses
from neurorate.model.spiking import TRAINED, LIFNetwork, _adaptation, _constants, _tensors, lif_rule, pseudo_derivative

if TYPE_CHECKING:
    from neurorate.backends.torch.ensemble import Ensemble


def truncation_rule(rule):
    """The :class:`~neurorate.learning.registry.Rule` of ``rule`` if the e-prop kernels compute it (the
    'presynaptic rates' truncation, no estimator of its own), else a one-line error: they never stand in for
    another rule."""
    r = get_rule(rule)
    if r.estimator or not r.detach_pre:
        raise NeurorateError(f"this kernel computes the e-prop truncation only (detach 'presynaptic rates'), not "
                             f"rule {r.name!r}")
    return r


@torch.no_grad()
def online_gradients(ens: Ensemble, rule, kind: str, x, target, mask, quant, step0: int = 0):
    """Loss, accuracy and e-prop/RFLO pseudo-gradients from forward traces (no autograd).

    Under a hardware profile the state, the sent rates and the traces are held on the profile's grids;
    stochastic rounding at step t is keyed by the global step ``step0 + t`` (as in the Lava model).
    """
    w = dyn.on_grid(ens.params, quant)
    f, fprime = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    _, t_steps, b, n_in = x.shape
    drv = dyn.drive_sequence(x, w["w_in"], w["b"])
    feedback = ens.feedback if truncation_rule(rule).random_feedback else w["w_out"].transpose(-1, -2)
    norm = losses.normalizer(kind, target, mask)
    traces = dyn.init_traces(ens.form, m, b, n, n_in, drv)
    g_rec = torch.zeros_like(w["w_rec"])
    g_in = torch.zeros_like(w["w_in"])
    g_b = torch.zeros(m, n, dtype=drv.dtype, device=drv.device)
    g_out = torch.zeros_like(w["w_out"])
    g_bout = torch.zeros_like(w["b_out"])
    state = torch.zeros(m, b, n, dtype=drv.dtype, device=drv.device)
    ys = []
    for t in range(t_steps):
        k = step0 + t
        pre_prev = dyn.rate(state, ens.form, f)
        if t > 0:  # the message sent at the previous step, rounded with that step's draws
            pre_prev = quant.rate(pre_prev, step=k - 1)
        state, pre = dyn.step(state, drv[:, t], w["w_rec"], ens.alpha, ens.form, f)
        state = quant.state(state, step=k)
        psi = fprime(pre)
        traces = dyn.trace_step(traces, ens.form, ens.alpha, pre_prev, x[:, t], psi)
        if quant.enabled:
            traces = dyn.Traces(*(quant.trace(tr, name=nm, step=k) for tr, nm in zip(traces, ("w_rec", "w_in", "b"))))
        r = quant.rate(dyn.rate(state, ens.form, f), step=k)
        y = dyn.readout(r, w["w_out"], w["b_out"])
        ys.append(y)
        g = losses.output_grad(kind, y, target[..., t, :, :] if kind == "mse" else target[..., t, :],
                               mask[..., t, :, :] if kind == "mse" else mask[..., t, :], norm)
        d_rec, d_in, d_b = dyn.trace_gradients(traces, ens.form, dyn.learning_signal(g, feedback), psi)
        g_rec += d_rec
        g_in += d_in
        g_b += d_b
        g_out += torch.matmul(g.transpose(-1, -2), r)
        g_bout += g.sum(-2, keepdim=True)
    y = torch.stack(ys, 1)
    loss = losses.loss(kind, y, target, mask)
    acc = losses.accuracy(kind, y, target, mask)
    grads = {"w_in": g_in, "w_rec": g_rec, "w_out": g_out, "b": g_b.unsqueeze(1), "b_out": g_bout}
    return loss, acc, grads



@torch.no_grad()
def factorized_gradients(ens: Ensemble, rule, kind: str, x, target, mask):
    """Form A e-prop (symmetric or random feedback) as one fused forward pass, no autograd.

    In form A the eligibility trace factorises into ``psi_t * rbar_t`` with presynaptic filters that do not
    depend on the loss, so the pseudo-gradient accumulates on-line with one batched matmul per step
    (``dW += (L_t * psi_t)^T rbar_t``); every per-step tensor stays in cache (materialising the whole
    ``(M, T, B, N)`` trajectory first was 2.3x slower at M = 64: memory bound). Identical (to rounding) to
    :func:`neurorate.backends.torch.gradients.autograd_gradients` with the detach and to :func:`online_gradients`.
    """
    p = ens.params
    f, _ = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    mx, t_steps, b, n_in = x.shape
    dt = p["w_rec"].dtype
    drive = dyn.drive_steps(x, p["w_in"], p["b"])
    xs = x.transpose(0, 1).expand(t_steps, m, b, n_in).contiguous()
    alpha, keep = ens.alpha, 1 - ens.alpha
    w_rec_t = p["w_rec"].transpose(-1, -2).contiguous()
    w_out_t = p["w_out"].transpose(-1, -2).contiguous()
    feedback = ens.feedback if truncation_rule(rule).random_feedback else p["w_out"].transpose(-1, -2)
    fb_t = feedback.transpose(-1, -2).contiguous()
    norm = losses.normalizer(kind, target, mask)
    shared = target.dim() == (3 if kind == "mse" else 2)
    zeros = lambda *shape: torch.zeros(*shape, dtype=dt, device=x.device)  # noqa: E731
    state, r = zeros(m, b, n), zeros(m, b, n)
    rbar, xbar, bbar = zeros(m, b, n), zeros(m, b, n_in), zeros(m, 1, 1)
    g_rec, g_in, g_b = zeros(m, n, n), zeros(m, n, n_in), zeros(m, 1, n)
    g_out, g_bout = zeros(m, p["w_out"].shape[1], n), zeros(m, 1, p["w_out"].shape[1])
    ys = []
    for t in range(t_steps):
        rbar.mul_(keep).addcmul_(alpha, r)  # rbar_t = (1-alpha) rbar_{t-1} + alpha r_{t-1}
        xbar.mul_(keep).addcmul_(alpha, xs[t])  # xbar_t includes x_t
        bbar.mul_(keep).add_(alpha)
        rec = torch.baddbmm(drive(t), r, w_rec_t)
        state.mul_(keep).addcmul_(alpha, rec)
        r = f(state)
        y = torch.baddbmm(p["b_out"], r, w_out_t)
        ys.append(y)
        tt = (target[t], mask[t]) if shared else (target[:, t], mask[:, t])
        g = losses.output_grad(kind, y, tt[0], tt[1], norm)
        e = torch.bmm(g, fb_t).mul_(dyn.fprime_from_rate(ens.activation, r))  # (L_t * psi_t), (M, B, N)
        et = e.transpose(-1, -2)
        g_rec.baddbmm_(et, rbar)
        g_in.baddbmm_(et, xbar)
        g_b.add_(e.sum(1, keepdim=True) * bbar)
        g_out.baddbmm_(g.transpose(-1, -2), r)
        g_bout.add_(g.sum(1, keepdim=True))
    y = torch.stack(ys, 1)
    grads = {"w_rec": g_rec, "w_in": g_in, "b": g_b, "w_out": g_out, "b_out": g_bout}
    return losses.loss(kind, y, target, mask), losses.accuracy(kind, y, target, mask), grads


def lif_online_gradients(nets: list[LIFNetwork], x, target, mask, kind: str = "mse", rule: str = "eprop"):
    """LIF/ALIF e-prop: the gradient from explicit eligibility traces run forward in time (no backward pass).

    The equations are in :mod:`neurorate.model.spiking`; ``x (T, B, n_in)``, targets and masks ``(T, B, ...)``;
    returns ``{name: (M, ...)}`` like :func:`neurorate.model.spiking_learning.autograd_gradients`.

    For ALIF units the eligibility ``e_t = psi_t (zbar_t - beta_a eps_t)`` carries the adaptation trace
    ``eps_t = psi_{t-1} zbar_{t-1} + (rho - psi_{t-1} beta_a) eps_{t-1}`` (Bellec et al. 2020); with
    ``beta_a = 0`` it is the LIF trace ``psi_t zbar_t``.
    """
    r = lif_rule(rule, nets)
    if not r.detach_pre:
        raise NeurorateError(f"online traces implement e-prop only (detach 'presynaptic rates'), not {r.name!r}")
    beta, theta, kappa, gamma = _constants(nets)
    rho, beta_a = _adaptation(nets, x)
    p = _tensors(nets)
    feedback = p["feedback"] if r.random_feedback else p["w_out"].transpose(-1, -2)
    norm = losses.normalizer(kind, target, mask)
    m, n, n_in = p["w_in"].shape
    bsz = x.shape[1]
    v = x.new_zeros(m, bsz, n)
    z, a, psi = torch.zeros_like(v), torch.zeros_like(v), torch.zeros_like(v)
    y = x.new_zeros(m, bsz, p["w_out"].shape[1])
    # presynaptic traces (zbar: recurrent, xbar: input, bbar: bias) and the adaptation traces eps = da/dW
    pre = {"w_rec": torch.zeros_like(v), "w_in": x.new_zeros(m, bsz, n_in), "b": x.new_zeros(m, bsz, 1)}
    eps = {k: torch.zeros_like(v).unsqueeze(-1).expand(-1, -1, -1, t.shape[-1]).clone() for k, t in pre.items()}
    ebar = {k: torch.zeros_like(e) for k, e in eps.items()}
    z_out, c_bar = torch.zeros_like(v), 0.0
    g = {k: torch.zeros_like(p[k]) for k in TRAINED}
    col = (lambda u: u.unsqueeze(-1))
    for t in range(x.shape[0]):
        new_pre = {"w_rec": z, "w_in": x[t].expand(m, -1, -1), "b": x.new_ones(m, bsz, 1)}
        for k in pre:  # eps_t from step t-1's psi and presynaptic trace, then the trace itself moves to t
            eps[k] = col(psi) * pre[k].unsqueeze(-2) + (rho - col(psi * beta_a)) * eps[k]
            pre[k] = beta * pre[k] + new_pre[k]
        drive = x[t] @ p["w_in"].transpose(-1, -2) + p["b"]
        v = beta * v + z @ p["w_rec"].transpose(-1, -2) + drive - theta * z
        a = rho * a + z
        z = (v - beta_a * a >= theta).to(v.dtype)
        psi = pseudo_derivative(v - beta_a * a, theta, gamma)
        for k in pre:
            ebar[k] = kappa * ebar[k] + col(psi) * (pre[k].unsqueeze(-2) - col(beta_a) * eps[k])
        y = kappa * y + z @ p["w_out"].transpose(-1, -2) + p["b_out"]
        z_out, c_bar = kappa * z_out + z, kappa * c_bar + 1.0
        g_y = losses.output_grad(kind, y, target[t], mask[t], norm)
        signal = col(g_y @ feedback.transpose(-1, -2))
        g["w_rec"] += (signal * ebar["w_rec"]).sum(1)
        g["w_in"] += (signal * ebar["w_in"]).sum(1)
        g["b"] += (signal * ebar["b"]).sum(1).transpose(-1, -2)
        g["w_out"] += g_y.transpose(-1, -2) @ z_out
        g["b_out"] += g_y.sum(1, keepdim=True) * c_bar
    g["b"], g["b_out"] = g["b"].squeeze(1), g["b_out"].squeeze(1)
    return g
