"""Loss and (pseudo-)gradients of an ensemble for one batch, per learning rule.

* ``bptt``, ``eprop``, ``eprop_random``, ``trunc1``: autograd through the time loop of
  :func:`neurorate.model.dynamics.step` with the rule's detach (``eprop``: presynaptic rate in ``W r``; ``trunc1``:
  the whole previous state) and, for ``eprop_random``, the random-feedback readout.
* ``eprop_online``, ``rflo``: explicit forward eligibility traces (:func:`neurorate.model.dynamics.trace_step`),
  no autograd, memory independent of T; symmetric (``W_out^T``) or random feedback respectively.

Inputs: ``x (Mx, T, B, n_in)`` with ``Mx`` 1 (shared data) or M (one stream per network); targets and
masks with the same optional leading dimension. Returns ``(loss (M,), accuracy (M,), grads)`` with
``grads[name]`` shaped like the ensemble parameter.
"""

from __future__ import annotations

import torch

from neurorate.hardware.quantize import make_quantizer
from neurorate.model import dynamics as dyn
from neurorate.model import losses

from .ensemble import Ensemble

AUTOGRAD_RULES = {"bptt": (False, False), "eprop": (True, False), "eprop_random": (True, False),
                  "trunc1": (False, True)}
ONLINE_RULES = ("eprop_online", "rflo")
RANDOM_FEEDBACK = ("eprop_random", "rflo")


# full precision: the quantizer of no profile returns every value unchanged
IDENTITY = make_quantizer(None, training=False)


def _drive(ens: Ensemble, params, x: torch.Tensor) -> torch.Tensor:
    mx, t, b, n_in = x.shape
    d = dyn.drive(x.reshape(mx, t * b, n_in), params["w_in"], params["b"])
    return d.reshape(ens.m, t, b, ens.n)


def _drive_steps(params, x: torch.Tensor):
    """``drive(t)`` = ``U x_t + b`` ``(M, B, N)`` computed per step (the same ops as :func:`_drive` on one step).

    Materialising the whole ``(M, T, B, N)`` drive first costs three passes over a fresh tens-of-MB buffer
    (page faults included) per iteration: a third of a Romo e-prop iteration at M = 40, B = 32, N = 64.
    """
    w_in_t = params["w_in"].transpose(-1, -2)
    return lambda t: torch.matmul(x[:, t], w_in_t) + params["b"]


def _weights(params, quant):
    if not quant.enabled:
        return params
    return {name: quant.weight(p, name) for name, p in params.items()}


def forward(ens: Ensemble, x: torch.Tensor, quant=IDENTITY, params=None, detach_pre=False, detach_state=False,
            step0: int = 0):
    """Run the ensemble from the zero state. Returns ``(states, rates, preacts)`` each ``(M, T, B, N)``.

    ``step0`` is the global index of the first step (keys stochastic rounding: step ``step0 + t``).
    """
    params = _weights(params if params is not None else ens.params, quant)
    f, _ = dyn.activation(ens.activation)
    drv = _drive(ens, params, x)
    state = torch.zeros(ens.m, x.shape[2], ens.n, dtype=drv.dtype, device=drv.device)
    states, rates, preacts = [], [], []
    for t in range(x.shape[1]):
        state, pre = dyn.step(state, drv[:, t], params["w_rec"], ens.alpha, ens.form, f, detach_pre, detach_state)
        state = quant.state(state, step=step0 + t)
        r = quant.rate(dyn.rate(state, ens.form, f), step=step0 + t)
        states.append(state)
        rates.append(r)
        preacts.append(pre)
    return torch.stack(states, 1), torch.stack(rates, 1), torch.stack(preacts, 1)


def autograd_gradients(ens: Ensemble, rule: str, kind: str, x, target, mask, quant=IDENTITY, step0: int = 0):
    """Loss, accuracy and gradients by autograd with the rule's detach."""
    detach_pre, detach_state = AUTOGRAD_RULES[rule]
    leaves = {name: p.detach().requires_grad_(True) for name, p in ens.params.items()}
    _, rates, _ = forward(ens, x, quant, leaves, detach_pre, detach_state, step0)
    m, t, b, n = rates.shape
    w = _weights(leaves, quant)
    flat = rates.reshape(m, t * b, n)
    if rule in RANDOM_FEEDBACK:
        y = dyn.readout_random_feedback(flat, w["w_out"], w["b_out"], ens.feedback)
    else:
        y = dyn.readout(flat, w["w_out"], w["b_out"])
    y = y.reshape(m, t, b, -1)
    loss = losses.loss(kind, y, target, mask)
    names = list(leaves)
    grads = torch.autograd.grad(loss.sum(), [leaves[k] for k in names])
    with torch.no_grad():
        acc = losses.accuracy(kind, y, target, mask)
    return loss.detach(), acc, dict(zip(names, grads))


@torch.no_grad()
def online_gradients(ens: Ensemble, rule: str, kind: str, x, target, mask, quant=IDENTITY, step0: int = 0):
    """Loss, accuracy and e-prop/RFLO pseudo-gradients from forward traces (no autograd).

    Under a hardware profile the state, the sent rates and the traces are held on the profile's grids;
    stochastic rounding at step t is keyed by the global step ``step0 + t`` (as in the Lava model).
    """
    w = _weights(ens.params, quant)
    f, fprime = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    _, t_steps, b, n_in = x.shape
    drv = _drive(ens, w, x)
    feedback = ens.feedback if rule in RANDOM_FEEDBACK else w["w_out"].transpose(-1, -2)
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
def factorized_gradients(ens: Ensemble, rule: str, kind: str, x, target, mask):
    """Form A e-prop (symmetric or random feedback) as one fused forward pass, no autograd.

    In form A the eligibility trace factorises into ``psi_t * rbar_t`` with presynaptic filters that do not
    depend on the loss, so the pseudo-gradient accumulates on-line with one batched matmul per step
    (``dW += (L_t * psi_t)^T rbar_t``); every per-step tensor stays in cache (materialising the whole
    ``(M, T, B, N)`` trajectory first was 2.3x slower at M = 64: memory bound). Identical (to rounding) to
    :func:`autograd_gradients` with the detach and to :func:`online_gradients`.
    """
    p = ens.params
    f, _ = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    mx, t_steps, b, n_in = x.shape
    dt = p["w_rec"].dtype
    drive = _drive_steps(p, x)
    xs = x.transpose(0, 1).expand(t_steps, m, b, n_in).contiguous()
    alpha, keep = ens.alpha, 1 - ens.alpha
    w_rec_t = p["w_rec"].transpose(-1, -2).contiguous()
    w_out_t = p["w_out"].transpose(-1, -2).contiguous()
    fb_t = (ens.feedback if rule in RANDOM_FEEDBACK else p["w_out"].transpose(-1, -2)).transpose(-1, -2).contiguous()
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


@torch.no_grad()
def bptt_form_a_gradients(ens: Ensemble, kind: str, x, target, mask):
    """Exact BPTT for form A with a hand-written backward pass (no autograd graph).

    ``delta_t = dL/da_t = psi_t * (V^T g_t + alpha W^T delta_{t+1}) + (1 - alpha) delta_{t+1}``;
    ``dW = alpha sum_t delta_t r_{t-1}^T``, ``dU = alpha sum_t delta_t x_t^T``, ``db = alpha sum_t delta_t``.
    Identical (to rounding) to :func:`autograd_gradients` with rule ``bptt``.
    """
    p = ens.params
    f, _ = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    mx, t_steps, b, n_in = x.shape
    dt = p["w_rec"].dtype
    drive = _drive_steps(p, x)
    xs = x.transpose(0, 1).expand(t_steps, m, b, n_in)
    alpha, keep = ens.alpha, 1 - ens.alpha
    w_rec_t = p["w_rec"].transpose(-1, -2).contiguous()
    state = torch.zeros(m, b, n, dtype=dt, device=x.device)
    rates = ens.workspace("bptt_rates", (t_steps, m, b, n), state)
    r = torch.zeros_like(state)
    for t in range(t_steps):
        state = keep * state + alpha * torch.baddbmm(drive(t), r, w_rec_t)
        r = f(state)
        rates[t] = r
    flat = ens.workspace("bptt_flat", (m, t_steps * b, n), state)
    flat.view(m, t_steps, b, n).copy_(rates.transpose(0, 1))
    y = dyn.readout(flat, p["w_out"], p["b_out"]).reshape(m, t_steps, b, -1)
    norm = losses.normalizer(kind, target, mask)
    g = losses.output_grad(kind, y, target, mask, norm[..., None] if norm.dim() else norm)  # (M, T, B, n_out)
    vg = torch.matmul(g, p["w_out"].unsqueeze(1), out=ens.workspace("bptt_vg", (m, t_steps, b, n), state))
    vg = vg.transpose(0, 1)  # V^T g_t as rows, (T, M, B, N)
    delta = torch.zeros_like(state)
    g_rec = torch.zeros_like(p["w_rec"])
    g_in = torch.zeros_like(p["w_in"])
    g_b = torch.zeros(m, 1, n, dtype=dt, device=x.device)
    for t in range(t_steps - 1, -1, -1):
        back = torch.bmm(delta, p["w_rec"]).mul_(alpha).add_(vg[t])  # V^T g_t + alpha W^T delta_{t+1}
        delta = back.mul_(dyn.fprime_from_rate(ens.activation, rates[t])).addcmul_(keep, delta)
        ad = alpha * delta
        if t > 0:
            g_rec.baddbmm_(ad.transpose(-1, -2), rates[t - 1])
        g_in.baddbmm_(ad.transpose(-1, -2), xs[t])
        g_b.add_(ad.sum(1, keepdim=True))
    g_flat = g.reshape(m, t_steps * b, -1)
    grads = {"w_rec": g_rec, "w_in": g_in, "b": g_b, "w_out": torch.matmul(g_flat.transpose(-1, -2), flat),
             "b_out": g_flat.sum(1, keepdim=True)}
    return losses.loss(kind, y, target, mask), losses.accuracy(kind, y, target, mask), grads


def gradients(ens: Ensemble, rule: str, kind: str, x, target, mask, quant=IDENTITY, impl: str = "auto",
              step0: int = 0):
    """Dispatch on the rule (see the module docstring).

    ``impl``: "auto" uses the fused form A kernels (:func:`factorized_gradients` for ``eprop``/``eprop_random``,
    :func:`bptt_form_a_gradients` for ``bptt``) when no profile quantises. Under a profile, ``eprop`` and
    ``eprop_random`` run on the forward traces (:func:`online_gradients`): the eligibility traces are then held
    at the profile's trace precision, as on the chip and in the Lava process, so the rule is the same on both
    backends (an autograd gradient has no trace to round). "autograd" forces the autograd implementation (the
    oracle tests compare the implementations).
    """
    if rule in ONLINE_RULES or (impl == "auto" and quant.enabled and rule in ("eprop", "eprop_random")):
        return online_gradients(ens, rule, kind, x, target, mask, quant, step0)
    if impl == "auto" and rule in ("eprop", "eprop_random") and ens.form == "A" and not quant.enabled:
        return factorized_gradients(ens, rule, kind, x, target, mask)
    if impl == "auto" and rule == "bptt" and ens.form == "A" and not quant.enabled:
        return bptt_form_a_gradients(ens, kind, x, target, mask)
    return autograd_gradients(ens, rule, kind, x, target, mask, quant, step0)
